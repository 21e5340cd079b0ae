"""The courses sidecar's pure rules (sidecars/courses/rules.py), property-based: the
enrolment state machine, lesson lock states and progress, quiz drawing and grading."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.sidecar import EnrolmentState
from sidecars.courses import rules
from sidecars.courses.rules import (
    DONE,
    DripKind,
    LessonRule,
    LessonState,
    ModuleRule,
    Outline,
    Question,
    QuestionKind,
    Trigger,
)

E = EnrolmentState


@given(st.lists(st.sampled_from(list(Trigger)), max_size=40))
def test_enrolment_machine_invariants(triggers: list[Trigger]) -> None:
    """Whatever happens: a move is allowed only by the table; completed comes only
    from active; paused only from active by lost access and it leaves only by regained
    access, a grant, expiry or revocation; a revoked enrolment comes back only by a
    grant; a grant always ends active."""
    state: E | None = None
    for trigger in triggers:
        new = rules.transition(state, trigger)
        if new is None:
            assert (state, trigger) not in rules.TRANSITIONS
            continue
        if new is E.COMPLETED:
            assert state is E.ACTIVE and trigger is Trigger.COMPLETE
        if new is E.PAUSED:
            assert state is E.ACTIVE and trigger is Trigger.ACCESS_LOST
        if state is E.PAUSED:
            assert trigger in (Trigger.ACCESS_REGAINED, Trigger.GRANT, Trigger.EXPIRE,
                               Trigger.REVOKE)
        if state is E.REVOKED:
            assert trigger is Trigger.GRANT
        if state is E.COMPLETED:
            assert new is E.REVOKED  # a completion is never undone but by staff
        if trigger is Trigger.GRANT:
            assert new is E.ACTIVE
        if new is E.PENDING_PAYMENT:
            assert state is None and trigger is Trigger.ENROL_PURCHASE
        assert rules.opens_content(new) == (new in (E.ACTIVE, E.COMPLETED))
        state = new


@st.composite
def outlines(draw: st.DrawFn) -> tuple[Outline, dict[int, LessonState]]:
    module_count = draw(st.integers(1, 4))
    modules = []
    lessons = []
    next_id = 100
    for m in range(1, module_count + 1):
        drip = draw(st.sampled_from(list(DripKind)))
        modules.append(ModuleRule(m, drip, draw(st.integers(0, 3)),
                                  draw(st.sampled_from([None, 0, 10**13]))))
        for _ in range(draw(st.integers(0, 4))):
            next_id += 1
            lessons.append(LessonRule(next_id, m, draw(st.booleans()), draw(st.booleans())))
    progress = {lesson.id: s for lesson in lessons
                if (s := draw(st.sampled_from([None, *LessonState]))) is not None
                and s is not LessonState.LOCKED}
    return Outline(modules, lessons, draw(st.booleans())), progress


@settings(max_examples=300)
@given(outlines(), st.sampled_from([None, *E]), st.booleans(), st.integers(1, 100))
def test_lesson_states(case: tuple[Outline, dict[int, LessonState]], enrolment: E | None,
                       released: bool, completion: int) -> None:
    """Lock states and progress: no content without an enrolment that opens it
    (previews aside); an open lesson shows its recorded state; progress counts done
    required lessons; completing one more lesson never locks another."""
    outline, progress = case
    now = 10**12 + 5 * 86_400_000
    computed = rules.compute(outline, enrolment=enrolment, activated_ms=10**12,
                             released=released, progress=progress, now_ms=now,
                             completion_percent=completion)
    required = [lesson for lesson in outline.lessons if lesson.required]
    done = [lesson for lesson in required if progress.get(lesson.id) in DONE]
    assert 0 <= computed.progress_percent <= 100
    if required:
        assert computed.progress_percent == len(done) * 100 // len(required)
    assert computed.complete == (bool(required) and computed.progress_percent >= completion)
    for lesson in outline.lessons:
        state = computed.states[lesson.id]
        if lesson.preview:
            assert state is not LessonState.LOCKED
        if not rules.opens_content(enrolment) and not lesson.preview:
            assert state is LessonState.LOCKED
        if lesson.module_id not in computed.open_modules and not lesson.preview:
            assert state is LessonState.LOCKED
        if state is not LessonState.LOCKED:
            assert state is progress.get(lesson.id, LessonState.AVAILABLE)
    if rules.opens_content(enrolment) and released:
        assert computed.open_modules == {m.id for m in outline.modules}
    for lesson in outline.lessons:
        if progress.get(lesson.id) in DONE:
            continue
        more = rules.compute(outline, enrolment=enrolment, activated_ms=10**12,
                             released=released, progress={**progress,
                                                          lesson.id: LessonState.COMPLETED},
                             now_ms=now, completion_percent=completion)
        opened_before = {i for i, s in computed.states.items() if s is not LessonState.LOCKED}
        opened_after = {i for i, s in more.states.items() if s is not LessonState.LOCKED}
        assert opened_before <= opened_after
        assert more.progress_percent >= computed.progress_percent


@st.composite
def questions(draw: st.DrawFn) -> Question:
    kind = draw(st.sampled_from([QuestionKind.SINGLE, QuestionKind.MULTIPLE,
                                 QuestionKind.TRUE_FALSE]))
    size = 2 if kind is QuestionKind.TRUE_FALSE else draw(st.integers(2, 6))
    if kind is QuestionKind.MULTIPLE:
        correct = draw(st.sets(st.integers(0, size - 1), min_size=1))
    else:
        correct = {draw(st.integers(0, size - 1))}
    return Question(draw(st.integers(1, 10**6)), kind,
                    tuple(f"c{i}" for i in range(size)), tuple(sorted(correct)),
                    draw(st.integers(1, 5)))


@settings(max_examples=300)
@given(st.lists(questions(), min_size=1, max_size=8, unique_by=lambda q: q.id),
       st.booleans(), st.booleans(), st.integers(0, 2**32), st.data())
def test_grading_follows_the_shown_order(qs: list[Question], shuffle_q: bool,
                                         shuffle_a: bool, seed: int,
                                         data: st.DataObject) -> None:
    """Whatever the pool and shuffles, answering the right choices *as shown* scores
    every point, and any other choice set scores none for that question."""
    pool = data.draw(st.sampled_from([None, *range(1, len(qs) + 1)]))
    ids, orders = rules.draw(qs, pool_size=pool, shuffle_questions=shuffle_q,
                             shuffle_answers=shuffle_a, rng=random.Random(seed))
    assert len(ids) == (len(qs) if pool is None else pool) and len(set(ids)) == len(ids)
    by_id = {q.id: q for q in qs}
    drawn = [by_id[i] for i in ids]
    for q, order in zip(drawn, orders, strict=True):
        assert sorted(order) == list(range(len(q.choices)))
    right = {q.id: [order.index(int(c)) for c in q.correct]
             for q, order in zip(drawn, orders, strict=True)}
    score, total, ok = rules.grade(drawn, orders, right)
    assert score == total == sum(q.points for q in drawn) and all(ok.values())
    q, order = drawn[0], orders[0]
    wrong = data.draw(st.sets(st.integers(0, len(q.choices) - 1)))
    if sorted(wrong) != sorted(right[q.id]):
        _, _, ok = rules.grade([q], [order], {q.id: sorted(wrong)})
        assert not ok[q.id]


@given(st.text(alphabet=" \t", max_size=3), st.text(alphabet=" \t.!?", max_size=4),
       st.sampled_from(["paris", "PARIS", "Paris", "ｐａｒｉｓ"]))
def test_short_answers_match_normalised(before: str, after: str, word: str) -> None:
    """Case, width, surrounding spaces and trailing punctuation do not matter."""
    q = Question(1, QuestionKind.SHORT, (), ("Paris",), 1)
    assert rules.grade_one(q, [], before + word + after)
    assert not rules.grade_one(q, [], "Lyon")
    assert not rules.grade_one(q, [], [0])
