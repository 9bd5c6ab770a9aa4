"""A reward module that fails to import, as a user's module with a missing dependency does."""

import kr1_no_such_dependency  # noqa: F401


def judge(answers, golds, **meta):
    return [0.0] * len(answers)
