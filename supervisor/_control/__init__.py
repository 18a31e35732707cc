"""The control socket: the wire protocol, the server and its operations over a ``ControlledRun``, and
``attach`` (the client handle a separate process uses). The server reads the group only through protocols."""

__all__: list[str] = []
