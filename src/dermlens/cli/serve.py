"""``dermlens serve``: the web page and HTTP API for clinicians, behind uvicorn."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dermlens.cli.common import ModelOption

app = typer.Typer()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 to reach it from phones on the network.")] = "127.0.0.1",
    port: int = 8000,
    model: ModelOption = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted photo (MB); bigger uploads get 413.")] = 20.0,
    max_concurrency: Annotated[int, typer.Option(min=1, help="Photos analysed at once (threads sharing one model).")] = 1,
    max_queue: Annotated[int, typer.Option(min=0, help="Photos allowed to wait; beyond that 503 with Retry-After.")] = 32,
    tta: Annotated[int, typer.Option(min=1, max=8, help="Orientation views averaged (1-8: flips and right-angle turns); default 8: the same answer however a photo is turned, ~0.1 s more per photo. --tta 1 turns it off.")] = 8,
    token: Annotated[Optional[str], typer.Option(envvar="DERMLENS_TOKEN", help="Access token every request must carry (header 'Authorization: Bearer TOKEN', or open the page once as /?token=TOKEN); without it: 401.")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="TLS private key (PEM): serve https.")] = None,
    ssl_certfile: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="TLS certificate (PEM), with --ssl-keyfile.")] = None,
    upload_timeout: Annotated[float, typer.Option(min=1, help="Seconds an upload may stall (nothing received) before it gets 408 and is closed.")] = 30.0,
    max_connections: Annotated[int, typer.Option(min=1, help="Open connections at most; beyond that 503.")] = 100,
):
    """Web page and HTTP API for clinicians: / (page), /api/v1/predict, /api/v1/model, /healthz, /docs."""
    if (ssl_keyfile is None) != (ssl_certfile is None):  # options first, before torch and the model load
        raise typer.BadParameter("give both --ssl-keyfile and --ssl-certfile, or neither", param_hint="'--ssl-certfile'")
    from dermlens.serve import create_app  # first of the imports: names the [serve] extra when it is missing
    from dermlens.serve.guard import bind_socket, is_loopback
    from dermlens.serve.logs import redact_tokens
    import uvicorn

    if not is_loopback(host) and not token:
        typer.echo(f"warning: listening on {host} without an access token: anyone on the network can use this service; "
                   "set --token (or DERMLENS_TOKEN)", err=True)
    try:
        sock = bind_socket(host, port)  # first: a taken port is told before anything claims to be serving
    except OSError as e:
        typer.echo(f"dermlens serve: error: cannot listen on {host}:{port}: {e.strerror or e}", err=True)
        raise typer.Exit(3)
    try:
        application = create_app(
            model_dir=model, max_upload_bytes=int(max_upload_mb * 1_000_000), max_concurrency=max_concurrency,
            max_queue=max_queue, tta=tta, token=token, upload_timeout=upload_timeout,
        )
        config = uvicorn.Config(
            application, log_level="info", limit_concurrency=max_connections, timeout_keep_alive=5,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None, ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        )
        redact_tokens(token)  # after uvicorn.Config has set its logging up: no token in the access log
        scheme = "https" if ssl_certfile else "http"
        typer.echo(f"dermlens serving on {scheme}://{host}:{port}/ (API docs at /docs); Ctrl-C stops", err=True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
