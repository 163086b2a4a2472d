"""curate's bundled plugins. Each module is registered through the ``curate`` entry-point
group, exactly as a third-party package's plugin would be."""
