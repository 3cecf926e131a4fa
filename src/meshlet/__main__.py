"""``python -m meshlet``. The agent starts each sidecar as ``python -m meshlet proxy``:
that goes straight to the sidecar's own entry point, without the CLI (click and, through
it, the control plane), so a sidecar process loads only the data plane."""

import sys

if sys.argv[1:2] == ["proxy"]:
    from meshlet.proxy.main import main as proxy_main

    sys.exit(proxy_main(sys.argv[2:]))

from meshlet.cli.main import main

main()
