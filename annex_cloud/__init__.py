"""What runs inside AWS: the broker, the enforcer and the rules they share.

This package stands alone (standard library and boto3 only) because it is deployed as the zip of
the region stack's functions; the tools import it, so the rules below live in one place:
``tags`` (the tag contract), ``expiry`` (the one lease-end format), ``layout`` (the bucket's keys),
``caps`` (the administrator's limits), ``cost`` (the one cost model, with ``prices``),
``guardrails`` (the time bounds the enforcer, the broker and the node share), ``metrics`` (what
the enforcer reports to CloudWatch) and ``leftovers`` (what an annex leaves that still costs money).
"""
