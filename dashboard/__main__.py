"""``python -m dashboard [--host H] [--port P] [--model NAME] [--params FILE]``: serve the dashboard."""

from __future__ import annotations

import argparse
import os
import sys

from lau.errors import BadInput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: LAU_DASHBOARD_PORT, else 8050)")
    parser.add_argument("--model", default=None, help="model shown at / (default: registry.model_name)")
    parser.add_argument("--params", default=None, help="params file (default: LAU_PARAMS, else params.yaml)")
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else int(os.environ.get("LAU_DASHBOARD_PORT", "8050"))
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        print(f"dashboard: bad port {os.environ.get('LAU_DASHBOARD_PORT')!r} "
              "(LAU_DASHBOARD_PORT must be 0-65535)", file=sys.stderr)
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
