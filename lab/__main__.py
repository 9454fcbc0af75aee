"""python -m lab up|down|status|env [--run-dir DIR] [component ...]"""

import argparse
import sys

from lab.core import COMPONENTS, DEFAULT_RUN_DIR, Lab, LabError
from lab.wiring import agent_networks, every_service_wire


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description="The portal's local lab on loopback ports.")
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("components", nargs="*", help=f"some of: {', '.join(COMPONENTS)} (default: all)")
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="where state, logs and files live")
    args = parser.parse_args(argv)
    lab = Lab(args.run_dir)
    names = args.components or None
    try:
        if args.command == "up":
            lab.up(names)
            if names is None:
                # The whole lab, as `make run` starts it: every config a user makes works, not only the demo's.
                agent = every_service_wire(lab)
                followed = ", ".join(agent_networks())
                print(f"every Jenkins job runs the pipeline; VM agent ({agent}) boots node exporters on {followed}")
            for name, (ok, detail) in lab.status().items():
                if names is None or name in names:
                    print(f"{name:13} {'up' if ok else 'DOWN'}  {detail}")
            print(f"settings for the portal: {lab.env_file}")
        elif args.command == "down":
            stopped = lab.stop(names)
            # What ran, and whether it stopped on SIGTERM or had to be killed after the grace period.
            detail = ", ".join(f"{name} ({pid}{', killed' if how == 'killed' else ''})" for name, pid, how in stopped)
            print(f"lab stopped: {detail or 'nothing was running'}")
        elif args.command == "env":
            for key, value in sorted(lab.env().items()):
                print(f"{key}={value}")
        else:
            bad = 0
            for name, (ok, detail) in lab.status().items():
                bad += not ok
                print(f"{name:13} {'up' if ok else 'DOWN'}  {detail}")
            return 1 if bad else 0
    except LabError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
