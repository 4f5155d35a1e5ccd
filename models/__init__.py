"""NumPyro model programs of bayes_ips, importable as ``bayes_ips.models``."""

__all__: list[str] = []
