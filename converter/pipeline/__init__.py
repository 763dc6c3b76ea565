"""`rkconvert build`: the request, the stage-keyed build folder, the stages, the pipeline that runs them."""
