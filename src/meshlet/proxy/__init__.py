"""The sidecar data plane.

Built inside-out: ``lb`` (pick an endpoint) → ``pool`` (reuse upstream connections) →
``cluster`` (endpoints + balancer + settings of one upstream service) → ``http`` / ``tcp``
(the per-connection protocols) → ``listener`` → ``sidecar`` (the process, its admin API
and its config snapshot). A new snapshot swaps clusters between requests; an in-flight
exchange keeps the endpoint and connection it already has.

The per-request modules run compiled when the install could compile them; ``native``
decides, before anything imports them.
"""

from meshlet.proxy.native import select

BUILD, BUILD_REASON = select()
