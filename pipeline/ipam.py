"""Find a free IP address for a new VM: the seed's IP pool script (scripts/get-available-ip.py runs `main`), and the
reservation the pipeline's ip_allocate step makes (`reserve_addresses`).

With the portal (a scale-out pipeline: CALLBACK_URL or PORTAL_URL, EVENT_ID and CALLBACK_TOKEN in the environment,
or --callback-url; the token only ever from CALLBACK_TOKEN, since a command line is public): reserve the next free
address of the event's IP pool in the portal's database, ping it when the pool asks for a ping check, and when it
answers tell the portal to skip it and reserve the next.

    get-available-ip.py --json [--count N] [--state FILE]    reserve (and record it in the pipeline's state file)
    get-available-ip.py --confirm ADDRESS --vm NAME         the VM has the address: mark it in use
    get-available-ip.py --release ADDRESS                   give it back (idempotent)
    get-available-ip.py --release-all                       give back every address of the event (the undo)

Without the portal, with only a range, it is the original ping-based finder: it prints the first address of the
range that does not answer a ping.

    get-available-ip.py --range 10.0.10.10-10.0.10.20

Exit status: 0 done, 2 bad arguments or range, 3 no free address (pool exhausted), 4 the portal refused or could
not be reached.
"""

import argparse
import ipaddress
import json
import signal
import sys
import time
from pathlib import Path

from pipeline import contract
from pipeline.ping import answers_ping
from pipeline.portal import PortalClient, PortalError
from pipeline.state import PipelineState

EXIT_USAGE, EXIT_EXHAUSTED, EXIT_PORTAL = 2, 3, 4
MAX_RANGE = 65536


class Exhausted(Exception):
    pass


class Aborted(Exception):
    pass


def parse_range(text):
    """[first..last] addresses of 'A-B', 'A' or a CIDR network (its host addresses); ValueError with the reason."""
    text = text.strip()
    try:
        if "/" in text:
            network = ipaddress.IPv4Network(text, strict=False)
            if network.num_addresses > MAX_RANGE:
                raise ValueError(f"{text} has more than {MAX_RANGE} addresses")
            return list(network.hosts()) if network.num_addresses > 2 else list(network)
        first_text, _sep, last_text = text.partition("-")
        first = ipaddress.IPv4Address(first_text.strip())
        last = ipaddress.IPv4Address(last_text.strip()) if last_text else first
    except ipaddress.AddressValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 range ({exc}); use FIRST-LAST, e.g. 10.0.10.10-10.0.10.20") from None
    if last < first:
        raise ValueError(f"range {text}: the last address {last} comes before the first {first}")
    if int(last) - int(first) + 1 > MAX_RANGE:
        raise ValueError(f"range {text} has more than {MAX_RANGE} addresses")
    return [ipaddress.IPv4Address(n) for n in range(int(first), int(last) + 1)]


def find_by_ping(addresses, *, timeout, command):
    for address in addresses:
        if not answers_ping(str(address), timeout=timeout, command=command):
            return {"address": str(address)}
    raise Exhausted(f"no free address: every address from {addresses[0]} to {addresses[-1]} answers a ping")


def reserve(portal, *, ping, timeout, command, max_skips):
    """Reserve one address; skip (and record) addresses that answer a ping."""
    skipped = []
    for _attempt in range(max_skips + 1):
        try:
            allocation = portal.ip_reserve()
        except PortalError as exc:
            if exc.code == "pool_exhausted":
                raise Exhausted(exc.detail) from None
            raise
        address = allocation["address"]
        if ping and allocation.get("ping_check") and answers_ping(address, timeout=timeout, command=command):
            portal.ip_skip(address, note="answered ping before use")
            skipped.append(address)
            continue
        allocation["skipped"] = skipped
        return allocation
    raise Exhausted(f"no free address: the {max_skips + 1} addresses offered all answered a ping: {', '.join(skipped)}")


def emit(result, as_json):
    if as_json:
        print(json.dumps(result, sort_keys=True))
    elif isinstance(result, list):
        print("\n".join(item["address"] for item in result))
    elif "address" in result:
        print(result["address"])
    else:
        print(" ".join(result.get("released", [])))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="get-available-ip.py",
        description="Reserve a free IP address from the portal's IP pool, or find one by ping in a range.",
    )
    parser.add_argument("--range", help="FIRST-LAST (or a CIDR): without the portal, ping-scan this range")
    parser.add_argument("--json", action="store_true", help="print JSON (address, netmask, gateway, DNS, pool)")
    parser.add_argument("--count", type=int, default=1, help="addresses to reserve (default 1)")
    parser.add_argument("--state", help="record reservations in this pipeline state file (for the undo)")
    parser.add_argument("--result", help="write the pipeline's step report (ip_allocate) as JSON to this file")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--confirm", metavar="ADDRESS", help="mark ADDRESS in use by --vm")
    action.add_argument("--release", metavar="ADDRESS", help="release ADDRESS")
    action.add_argument("--release-all", action="store_true", help="release every address of the event")
    parser.add_argument("--vm", help="VM name (with --confirm)")
    parser.add_argument("--callback-url", help="the event's callback URL (default: CALLBACK_URL)")
    parser.add_argument("--portal-url", help="portal base URL, with --event-id (instead of a callback URL)")
    parser.add_argument("--event-id", help="scale-out event id (default: EVENT_ID)")
    parser.add_argument("--no-ping", action="store_true", help="do not ping reserved addresses")
    parser.add_argument("--ping-timeout", type=float, default=1.0, help="seconds to wait for a ping answer")
    parser.add_argument("--ping-command", help="ping program (default: PING_COMMAND or ping)")
    parser.add_argument("--max-skips", type=int, default=20, help="addresses that answer a ping before giving up")
    return parser


def run(args, parser):
    portal = PortalClient.from_env(callback_url=args.callback_url, portal_url=args.portal_url, event_id=args.event_id)
    if portal is None:
        if args.confirm or args.release or args.release_all:
            parser.error("--confirm and --release need the portal (CALLBACK_URL, EVENT_ID and CALLBACK_TOKEN)")
        if not args.range:
            parser.error("give --range, or run in a pipeline with CALLBACK_URL, EVENT_ID and CALLBACK_TOKEN set")
        addresses = parse_range(args.range)
        return find_by_ping(addresses, timeout=args.ping_timeout, command=args.ping_command)
    if args.range:
        parse_range(args.range)  # still refuse a malformed range, even though the portal's pool decides
    state = PipelineState(args.state) if args.state else None
    if args.confirm:
        if not args.vm:
            parser.error("--confirm needs --vm NAME")
        parse_range(args.confirm)
        return portal.ip_confirm(args.confirm, args.vm)
    if args.release or args.release_all:
        if args.release:
            parse_range(args.release)
        result = portal.ip_release(args.release)
        if state is not None:
            gone = set(result.get("released", [])) | ({args.release} if args.release else set())
            state.remove("ips", lambda ip: args.release_all or ip["address"] in gone)
        return result
    if args.count < 1:
        parser.error("--count must be at least 1")
    results = reserve_addresses(
        portal,
        state,
        count=args.count,
        ping=not args.no_ping,
        timeout=args.ping_timeout,
        command=args.ping_command,
        max_skips=args.max_skips,
    )
    return results[0] if args.count == 1 else results


def reserve_addresses(portal, state, *, count, ping=True, timeout=1.0, command=None, max_skips=20):
    """Reserve `count` addresses, each recorded in the state file (when given) as soon as the portal hands it out."""
    results = []
    for _n in range(count):
        allocation = reserve(portal, ping=ping, timeout=timeout, command=command, max_skips=max_skips)
        if state is not None:
            state.add("ips", {k: v for k, v in allocation.items() if k != "skipped"})
        results.append(allocation)
    return results


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    code, message = 0, ""
    try:
        result = run(args, parser)
    except ValueError as exc:
        code, message = EXIT_USAGE, str(exc)
    except Exhausted as exc:
        code, message = EXIT_EXHAUSTED, str(exc)
    except PortalError as exc:
        code, message = EXIT_PORTAL, str(exc)
    except Aborted as exc:
        code, message = 1, str(exc)
    if code:
        print(f"get-available-ip: {message}", file=sys.stderr)
    else:
        emit(result, args.json)
    if args.result:
        write_step_report(args, result if not code else None, message, time.monotonic() - started)
    return code


def _on_sigterm(signum, frame):
    raise Aborted("the build was aborted while reserving an IP address")


def write_step_report(args, result, message, seconds):
    """The body of the pipeline's ip_allocate step report; a failure is also kept in the state file."""
    if result is None:
        body = {"step": "ip_allocate", "status": "failed", "message": message}
        if args.state:
            PipelineState(args.state).record_failure("ip_allocate", message)
    else:
        allocations = result if isinstance(result, list) else [result]
        skipped = [address for a in allocations for address in a.get("skipped", [])]
        addresses = [a["address"] for a in allocations]
        body = {
            "step": "ip_allocate",
            "status": "succeeded",
            **contract.message_fields(contract.reserved_message(addresses, skipped)),
            "details": {"addresses": addresses, "skipped": skipped},
        }
    body.setdefault("details", {})["seconds"] = round(seconds, 3)
    Path(args.result).write_text(json.dumps(body))
