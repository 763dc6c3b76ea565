"""The real CLI in its own process, forked from a server that has imported what a command imports.

`python -m converter.cli` spends 5-7 s of CPU importing torch, diffusers and transformers before it does
anything, and the suite runs the CLI about two hundred times on two cores. The toolkit's fork server
(converter/toolkit/fork_server.py) forks each run instead, after those imports: the command runs in a
fresh process of its own, with its own arguments, folder and environment, exactly as `python -m` would run
it, and may die or be killed without touching the test process. Tests that signal a CLI process or
look for it by its command line start it with subprocess themselves.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from converter.toolkit.child import Child
from converter.toolkit.fork_server import ForkServer

# converter.cli first: it sets the libraries' verbosity in the environment before they are imported.
PRELOAD = ("converter.cli", "converter.builds.builder", "converter.models.unet_loading",
           "converter.models.pipeline_models", "converter.imaging.text_to_image",
           "diffusers.models.unets.unet_2d_condition", "diffusers.models.autoencoders.autoencoder_kl",
           "diffusers.models.autoencoders.autoencoder_tiny",
           "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
           "transformers.models.clip.modeling_clip", "onnxruntime")

_SERVER: ForkServer | None = None


def _server() -> ForkServer:
    global _SERVER
    if _SERVER is None:
        _SERVER = ForkServer(preload=PRELOAD)
    return _SERVER


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`python -m converter.cli args` in `cwd` and `env`, as subprocess.run(capture_output=True, text=True)
    returns it; SIGKILLed and subprocess.TimeoutExpired after `timeout` seconds."""
    command = [sys.executable, "-m", "converter.cli", *args]
    with tempfile.TemporaryDirectory(prefix="rkconvert-cli-") as tmp:
        stdout, stderr = Path(tmp) / "stdout", Path(tmp) / "stderr"
        child = Child("converter.cli", list(args), cwd, stdout, "rkconvert", via=_server(), stderr=stderr,
                      env=env)
        deadline = time.monotonic() + timeout
        while not child.poll():
            if time.monotonic() > deadline:
                child.kill()
                raise subprocess.TimeoutExpired(command, timeout, stdout.read_text(errors="replace"),
                                                stderr.read_text(errors="replace"))
            time.sleep(0.05)
        return subprocess.CompletedProcess(command, child.returncode, stdout.read_text(errors="replace"),
                                           stderr.read_text(errors="replace"))
