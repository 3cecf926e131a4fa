"""The build of the compiled modules this process runs (``native.py``), chosen once,
before anything imports them: import this ahead of any of them."""

from meshlet.native import select

BUILD, BUILD_REASON = select()
