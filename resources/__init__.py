"""Files shipped with Checkpoint Explorer; installed as the package ``explorer.resources``.

Read them through ``explorer.core.resources``, never by path.
"""
