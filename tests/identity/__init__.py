"""Tests of the local managed-identity endpoint (``local.identity``) with the real azure-identity SDK."""
