"""``sm-magic serve`` (a local SageMaker endpoint), ``sm-magic demo`` and ``sm-magic lab``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sm_magic.local.backends import INSTALL_HINT, model_available
from sm_magic.local.config import EndpointSpec, ServerConfig
from sm_magic.local.containers import CONTAINERS
from sm_magic.local.server import LocalEndpoint
from sm_magic.session import LOCAL_KEY, LOCAL_SECRET

SERVE_PORT = 8080  # `sm-magic serve`'s port unless --port or the config file says otherwise
DEFAULT_ENDPOINTS = ["endpoint-name=tgi", "chat=tgi-messages", "lmi=lmi", "embed=tei-embedding"]
ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "notebooks" / "01-quickstart.ipynb"


def _server_config(args: argparse.Namespace) -> ServerConfig:
    try:
        config = ServerConfig.load(args.config) if args.config else ServerConfig()
    except (OSError, ValueError, TypeError) as e:  # a typo in the file: one line, not a traceback
        raise SystemExit(f"sm-magic serve: {args.config}: {e}") from None
    if args.host:
        config.host = args.host
    if args.port is not None:  # --port, else the config file's port, else serve's usual 8080
        config.port = args.port
    elif not config.port:
        config.port = SERVE_PORT if getattr(args, "command", None) == "serve" else 0
    if args.region:
        config.region = args.region
    backend = args.backend
    if backend == "auto":
        backend = "model" if model_available() else "deterministic"
        if backend == "deterministic":
            print(f"Using the deterministic backend. {INSTALL_HINT}", file=sys.stderr)
    elif backend == "model" and not model_available():
        raise SystemExit(INSTALL_HINT)
    try:
        if args.endpoint or not config.endpoints:  # --endpoint adds to the file's endpoints (a name replaces)
            given = [EndpointSpec.parse(e, backend) for e in (args.endpoint or DEFAULT_ENDPOINTS)]
            for spec in given:  # embedding endpoints: the embedding model if installed (or hashing on request)
                if getattr(CONTAINERS[spec.format], "embeds", False):
                    spec.backend = "deterministic" if args.backend == "deterministic" else "auto"
            names = {spec.name for spec in given}
            config.endpoints = [spec for spec in config.endpoints if spec.name not in names] + given
    except ValueError as e:
        raise SystemExit(f"sm-magic serve: {e}") from None
    for spec in config.endpoints:
        if spec.backend == "auto" and not getattr(CONTAINERS[spec.format], "embeds", False):
            spec.backend = backend  # embedding endpoints choose their own model
        spec.max_concurrency = spec.max_concurrency or getattr(args, "max_concurrency", 0)
        spec.max_rps = spec.max_rps or getattr(args, "max_rps", 0.0)
    if getattr(args, "s3_endpoint_url", None):
        config.s3_endpoint_url = args.s3_endpoint_url
    if args.verify_signatures:
        config.credentials = {LOCAL_KEY: LOCAL_SECRET}
    return config


def environment(server: LocalEndpoint) -> dict[str, str]:
    """What a shell or kernel needs to talk to this endpoint with plain boto3 and sm_magic."""
    return {**server.env, "SM_MAGIC_LOCAL_URL": server.url,
            "AWS_ACCESS_KEY_ID": LOCAL_KEY, "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET}


def _start(args: argparse.Namespace) -> LocalEndpoint:
    config = _server_config(args)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Warning: listening on {config.host}, reachable from other machines.", file=sys.stderr)
    server = LocalEndpoint(config).start()
    names = ", ".join(f"{e.name} ({e.format}, {e.backend})" for e in config.endpoints)
    print(f"Local SageMaker endpoint at {server.url}\n  endpoints: {names}")
    return server


def serve(args: argparse.Namespace) -> int:
    server = _start(args)
    print("\nPaste these to point boto3, the aws CLI and sm_magic at it:")
    for key, value in environment(server).items():
        print(f"  export {key}={value}")
    print("In a notebook: %load_ext sm_magic, then %sagemaker session --local " + server.url)
    print("Ctrl-C stops.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopped.")
    return 0


def run_notebook(path: Path, out_dir: Path, env: dict[str, str], timeout: int = 300,
                 store_widget_state: bool = False) -> object:
    """Execute a notebook in a fresh kernel with ``env``; write it (and HTML) to ``out_dir``.

    The kernel talks to this process over IPC sockets in a private temporary directory, not TCP.
    """
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="sm-magic-kernel-") as sockets:
        km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3",
                                store_widget_state=store_widget_state,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute(env={**os.environ, **env}, cleanup_kc=True)  # we made km: shut its kernel down
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    try:
        from nbconvert import HTMLExporter

        html, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / path.with_suffix(".html").name).write_text(html)
    except ImportError:
        pass
    return nb


def answers(nb: object) -> list[str]:
    """The answers sm_magic rendered in an executed notebook (outputs carrying its metadata)."""
    found = []
    for cell in nb.cells:  # type: ignore[attr-defined]
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("sm_magic")
            if meta and not meta.get("dry_run") and "text/plain" in output.get("data", {}):
                found.append(output["data"]["text/plain"])
    return found


def demo(args: argparse.Namespace) -> int:
    if not model_available():
        raise SystemExit(INSTALL_HINT)
    args.backend = "model"
    server = _start(args)
    out_dir = Path(args.out).resolve()
    try:
        started = time.perf_counter()
        print(f"Running {QUICKSTART.relative_to(ROOT)} in a fresh kernel…", flush=True)
        nb = run_notebook(QUICKSTART, out_dir, environment(server))
        print(f"\nAnswers from the quick-start ({time.perf_counter() - started:.1f} s):")
        for text in answers(nb):
            print(f"  • {text.strip()}")
    finally:
        server.stop()
    print(f"\nExecuted notebook: {out_dir / QUICKSTART.name}")
    html = out_dir / QUICKSTART.with_suffix(".html").name
    if html.exists():
        print(f"HTML:              {html}")
    print("Open the notebooks in JupyterLab against the same local endpoint with: make lab")
    return 0


def lab(args: argparse.Namespace) -> int:
    server = _start(args)
    env = {**os.environ, **environment(server)}
    command = [sys.executable, "-m", "jupyterlab", "--notebook-dir", str(ROOT / "notebooks")]
    if os.geteuid() == 0:  # containers and CI machines often run as root; JupyterLab refuses that unless told
        command.append("--allow-root")
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sm-magic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "run a local SageMaker endpoint"),
                            ("demo", "run the quick-start notebook on the local endpoint with the real model"),
                            ("lab", "JupyterLab on the notebooks, with a local endpoint")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", help="address to bind (default 127.0.0.1; others only when asked)")
        p.add_argument("--port", type=int, help="port (0: any free one; default: the config file's, else "
                       + (f"{SERVE_PORT})" if name == "serve" else "any free one)"))
        p.add_argument("--region", help="region the endpoint reports (default us-east-1)")
        p.add_argument("--endpoint", action="append", metavar="NAME=FORMAT[:OPTION...]",
                       help="an endpoint and its container format (repeatable); formats: tgi, tgi-messages, "
                            "lmi, lmi-chat, llama2-chat, flan-t5, embedding; options: concurrency=N (calls in "
                            "flight), rps=R (calls per second), async (an async inference endpoint: answers "
                            "go to s3://sm-magic-local/async-endpoint-outputs/NAME/), e.g. big=lmi:concurrency=8, "
                            "later=tgi:async")
        p.add_argument("--backend", choices=["auto", "model", "deterministic"], default="auto",
                       help="the real model (SmolLM2 via llama.cpp) when installed, else deterministic")
        p.add_argument("--config", help="TOML/JSON file with endpoints, variants, faults, latency")
        p.add_argument("--verify-signatures", action="store_true",
                       help=f"check SigV4 with the local key pair ({LOCAL_KEY})")
        if name == "serve":
            p.add_argument("--max-concurrency", type=int, default=0, metavar="N",
                           help="capacity of each endpoint without its own: calls in flight beyond N are "
                                "answered ThrottlingException (0: no limit)")
            p.add_argument("--max-rps", type=float, default=0.0, metavar="R",
                           help="calls per second each endpoint without its own limit takes (0: no limit)")
            p.add_argument("--s3-endpoint-url", metavar="URL",
                           help="S3-compatible service (e.g. moto's server) that async endpoints read requests "
                                "from and write answers to; required by :async endpoints")
        if name == "demo":
            p.add_argument("--out", default="out", help="where the executed notebook and HTML go")
    args = parser.parse_args(argv)
    return {"serve": serve, "demo": demo, "lab": lab}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
