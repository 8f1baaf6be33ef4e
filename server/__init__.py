"""The Aisle gRPC server: ingestion, catalog, users and recommendations."""

from server.kernel_cache import configure as _configure_kernel_cache

# Before any module of the package defines a numba kernel (see `server.kernel_cache`).
_configure_kernel_cache()
