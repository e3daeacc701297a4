"""The one exception type beanwatch raises for problems it can name."""


class BeanwatchError(Exception):
    """A problem with input, host or kernel, described in one line for the operator."""
