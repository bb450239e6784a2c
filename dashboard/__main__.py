"""``python -m dashboard [--host H] [--port P] [--model NAME] [--params FILE]``: serve the dashboard."""

from __future__ import annotations

import argparse
import os
import sys

from lau.errors import BadInput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard",
                                     description="Serve the lau ops dashboard: the erasure page and /metrics.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: LAU_DASHBOARD_PORT, else 8050)")
    parser.add_argument("--model", default=None, help="model shown at / (default: registry.model_name)")
    parser.add_argument("--params", default=None, help="params file (default: LAU_PARAMS, else params.yaml)")
    args = parser.parse_args(argv)
    text = str(args.port) if args.port is not None else os.environ.get("LAU_DASHBOARD_PORT", "8050")
    port = int(text) if text.strip().isdigit() else -1
    if not 0 <= port <= 65535:
        where = "--port" if args.port is not None else "LAU_DASHBOARD_PORT"
        print(f"dashboard: {where}={text!r}: expected a port number, 0 to 65535", file=sys.stderr)
        return 2
    from dashboard.server import serve

    try:
        serve(args.host, port, args.model, args.params)
    except BadInput as err:
        print(f"dashboard: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"dashboard: cannot listen on {args.host}:{port} ({err.strerror or err})", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
