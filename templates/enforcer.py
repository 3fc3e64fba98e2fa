"""condor-annex enforcer (being written)."""


def handler(event, context):
    return {}
