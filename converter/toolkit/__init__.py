"""rknn-toolkit2, and everything rkconvert knows about how it behaves: the only code that imports `rknn`.

The toolkit runs only in a child process (worker.py, started by driver.py through child.py, forked by
fork_server.py from a process that has imported torch once): it can die by a signal. A build is handed
over as a ToolkitJob (job.py), which alone says what a dtype means to the toolkit. Beside the driver: readers of what the toolkit leaves behind (rknn_file.py the `.rknn`
itself, layer_table.py its verbose log's layer table and memory map, snapshot.py its per-layer dumps),
how a failed run is classified (failure.py), the catalogue of known failures (known_failures.toml) and
the stand-alone reproduction script written for upstream reports (repro_script.py).
"""
