"""Wire formats: how each API shape bounds a request, reports usage, and words an error.

Each endpoint is an :class:`~proxy.wire.base.Endpoint`; the proxy's pipeline is the same
for all of them and asks the endpoint only format questions.
"""
