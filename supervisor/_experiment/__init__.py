"""Experiments: the same client run against several configurations of a topology (arms), each trial on a
fresh launch, in an interleaved order, with the results written as rows and summarised per arm."""

__all__: list[str] = []
