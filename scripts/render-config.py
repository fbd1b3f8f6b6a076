#!/usr/bin/env python3
"""Rewrite the demo ports in envoy/envoy.yaml or nginx/nginx.conf (standard library only).

The shipped configs use the demo ports (Envoy 8080, nginx 8081, Better Auth 3000, todo 8000,
authz gRPC 9001, authz HTTP 9002, Envoy admin 9901, ...), each for one purpose only, so a port
mapping is unambiguous. Rewritten forms:

    127.0.0.1:PORT   localhost:PORT   [::1]:PORT        (nginx listen/server lines, URLs, comments)
    port_value: PORT                                    (Envoy socket_address)

Usage:
    render-config.py envoy/envoy.yaml --port 8080=18080 --port 9001=19001 > out.yaml
    render-config.py nginx/nginx.conf --port 8081=18081 -o out.conf
    render-config.py envoy/envoy.yaml --replace 'timeout: 0.25s=timeout: 1.5s' ...

Every --port and --replace must match at least once (a typo is an error, not a silent no-op).
"""

from __future__ import annotations

import argparse
import re
import sys


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(text)
    return value


def parse_mapping(item: str) -> tuple[int, int]:
    try:
        old, new = item.split("=", 1)
        return _port(old.strip()), _port(new.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW ports, got {item!r}") from None


def parse_replace(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW text, got {item!r}")
    old, new = item.split("=", 1)
    if not old:
        raise argparse.ArgumentTypeError("--replace needs a non-empty OLD text")
    return old, new


# host:PORT or port_value: PORT, with the port not followed by another digit.
_PATTERN = re.compile(
    r"(?P<prefix>(?:127\.0\.0\.1|localhost|\[::1\]):|port_value:\s*)(?P<port>\d{1,5})(?!\d)"
)


def render(text: str, ports: dict[int, int], replacements: list[tuple[str, str]]) -> tuple[str, list[str]]:
    used: set[int] = set()

    def sub(match: re.Match) -> str:
        port = int(match.group("port"))
        if port in ports:
            used.add(port)
            return f"{match.group('prefix')}{ports[port]}"
        return match.group(0)

    out = _PATTERN.sub(sub, text)
    problems = [f"port {p} does not occur in the input" for p in ports if p not in used]
    for old, new in replacements:
        if old not in out:
            problems.append(f"text {old!r} does not occur in the input")
        out = out.replace(old, new)
    return out, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="config file to render")
    parser.add_argument("--port", action="append", type=parse_mapping, default=[], metavar="OLD=NEW",
                        help="replace port OLD with NEW (repeatable)")
    parser.add_argument("--replace", action="append", type=parse_replace, default=[], metavar="OLD=NEW",
                        help="replace literal text OLD with NEW after the port rewrite (repeatable)")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args(argv)

    ports: dict[int, int] = {}
    for old, new in args.port:
        if old in ports and ports[old] != new:
            parser.error(f"port {old} mapped twice ({ports[old]} and {new})")
        ports[old] = new
    targets = list(ports.values())
    if len(set(targets)) != len(targets):
        parser.error("two ports are mapped to the same new port")

    try:
        with open(args.input, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        print(f"render-config: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2

    out, problems = render(text, ports, args.replace)
    if problems:
        for problem in problems:
            print(f"render-config: {args.input}: {problem}", file=sys.stderr)
        return 1

    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
