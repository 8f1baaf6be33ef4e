"""Customers' rights on the server: erasure with a receipt, export, and the audit log of both."""
