"""Adapters that let frameworks use kvstore: Django's cache framework, dogpile.cache regions."""
