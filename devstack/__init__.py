"""The development stack: the embedded services (``services``, located by ``paths``) and the runner behind
``./dev start`` (``python -m devstack``). Not a Django app: settings import ``devstack.paths`` only, and no
app imports this package.
"""
