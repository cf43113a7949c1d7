"""``Work.finished`` builds a Work whose op already ran; ``Work.done`` is its deprecated name."""

import pytest

from ringrt import Work


def test_a_finished_work_is_completed_with_its_result():
    work = Work.finished("isend", result=7)
    assert work.is_completed() and work.exception() is None
    assert work.wait() is True and work.result() == 7


def test_the_old_factory_name_still_works_and_says_it_is_deprecated():
    with pytest.warns(DeprecationWarning, match="Work.finished"):
        work = Work.done("isend", result=3)
    assert work.is_completed() and work.result() == 3
