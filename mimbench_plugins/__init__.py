"""mimbench's built-in components. Each module is an ordinary mimbench plugin,
registered through the ``mimbench`` entry-point group like any third-party one."""
