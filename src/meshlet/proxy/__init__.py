"""The sidecar data plane.

Built inside-out: ``lb`` (pick an endpoint) → ``pool`` (decide: idle connections,
limits, waiting requests) and ``connector`` (act: open, hand over, close) →
``cluster`` (endpoints + balancer + settings + pool of one upstream service) →
``http`` / ``upstream`` / ``tcp`` (the per-connection protocols) → ``listener`` →
``sidecar`` (the process, its admin API and its config snapshot). A new snapshot swaps
clusters between requests; an in-flight exchange keeps the endpoint and connection it
already has. The sidecar process loads only this package, ``observe`` and the leaf
modules below them (``tests/integration/test_sidecar_process.py`` checks).

The per-request modules run compiled when the install could compile them;
``meshlet.compiled`` decides, before anything imports them.
"""

import meshlet.compiled  # noqa: F401  (an import, as it may be the one importing us)
