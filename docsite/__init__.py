"""Tooling for the documentation site (docs/, mkdocs.yml; issue #18): the configuration table
generated from the settings class, and the mkdocs hooks that publish what the pages refer to.
Nothing here is imported by the service."""
