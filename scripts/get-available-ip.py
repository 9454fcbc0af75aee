#!/usr/bin/env python3
"""Find a free IP address for a new VM (the seed's IP pool script): `pipeline.ipam` does the work.

Run it with the portal's checkout on the Python path, as the pipeline does (docs/pipeline.md):
    PYTHONPATH=/opt/vmautoscale scripts/get-available-ip.py --range 10.0.10.10-10.0.10.20
`get-available-ip.py --help` lists the options; exit status 0 done, 2 bad arguments or range, 3 no free address
(pool exhausted), 4 the portal refused or could not be reached.
"""

import sys

try:
    from pipeline.ipam import main
except ModuleNotFoundError as exc:
    if exc.name != "pipeline":
        raise
    sys.exit("get-available-ip: the portal's pipeline package is not importable: set PYTHONPATH to the checkout")

if __name__ == "__main__":
    sys.exit(main())
