"""A build: the request, the plan settled from it, the stage-keyed build folder, the stages, the
orchestration that runs them, and a finished build reopened."""
