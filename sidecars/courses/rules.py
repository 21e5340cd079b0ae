"""The courses sidecar's rules, pure (no I/O): the enrolment state machine, access rules,
drip, lesson states, progress and quiz grading. The services feed them rows and act on
what they answer, so the property tests exercise exactly what the routes do."""

from __future__ import annotations

import enum
import random
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from protocol.sidecar import EnrolmentState

E = EnrolmentState


class Trigger(enum.StrEnum):
    """What moves an enrolment (docs/courses.md, the state machine)."""

    ENROL_FREE = "enrol_free"          # a learner enrols and the access rule holds
    ENROL_PURCHASE = "enrol_purchase"  # a learner enrols in a purchase course
    GRANT = "grant"                    # payment confirmed or staff grant (also re-grant)
    ACCESS_LOST = "access_lost"        # tier lost, left or banned, subscription lapsed
    ACCESS_REGAINED = "access_regained"
    COMPLETE = "complete"              # the completion rule holds
    EXPIRE = "expire"                  # the access period ended
    REVOKE = "revoke"                  # staff


TRANSITIONS: dict[tuple[EnrolmentState | None, Trigger], EnrolmentState] = {
    (None, Trigger.ENROL_FREE): E.ACTIVE,
    (None, Trigger.ENROL_PURCHASE): E.PENDING_PAYMENT,
    (None, Trigger.GRANT): E.ACTIVE,
    (E.PENDING_PAYMENT, Trigger.GRANT): E.ACTIVE,
    (E.PENDING_PAYMENT, Trigger.REVOKE): E.REVOKED,
    (E.ACTIVE, Trigger.ACCESS_LOST): E.PAUSED,
    (E.ACTIVE, Trigger.COMPLETE): E.COMPLETED,
    (E.ACTIVE, Trigger.EXPIRE): E.EXPIRED,
    (E.ACTIVE, Trigger.REVOKE): E.REVOKED,
    (E.PAUSED, Trigger.ACCESS_REGAINED): E.ACTIVE,
    (E.PAUSED, Trigger.GRANT): E.ACTIVE,
    (E.PAUSED, Trigger.EXPIRE): E.EXPIRED,
    (E.PAUSED, Trigger.REVOKE): E.REVOKED,
    (E.COMPLETED, Trigger.REVOKE): E.REVOKED,
    (E.EXPIRED, Trigger.GRANT): E.ACTIVE,
    (E.EXPIRED, Trigger.ENROL_FREE): E.ACTIVE,
    (E.REVOKED, Trigger.GRANT): E.ACTIVE,
}
"""Every allowed transition; anything else is refused (``conflict``). A completed
enrolment stays completed when access is lost (the certificate is earned); a revoked
one comes back only by a grant (staff), never by enrolling again."""


def transition(state: EnrolmentState | None, trigger: Trigger) -> EnrolmentState | None:
    """The next state, or None when ``trigger`` does not apply in ``state``."""
    return TRANSITIONS.get((state, trigger))


def opens_content(state: EnrolmentState | None) -> bool:
    """Whether lessons (beyond previews) are open in this state."""
    return state in (E.ACTIVE, E.COMPLETED)


# ------------------------------------------------------------------------- access


class AccessKind(enum.StrEnum):
    OPEN = "open"                    # every member
    TIER = "tier"                    # member tier >= value
    LEVEL = "level"                  # gamification level >= value (see docs: grant-only)
    PURCHASE = "purchase"            # a billing price; pending payment until granted
    DAYS_AFTER_JOIN = "days_after_join"  # member for >= value days
    MANUAL = "manual"                # staff grant only


@dataclass(frozen=True)
class AccessFacts:
    """What an access rule is judged on."""

    member: bool
    tier: int = 0
    member_days: float = 0.0
    level: int | None = None
    """A gamification level, when a provider exists (none yet: None)."""


def access_holds(kind: AccessKind, value: int, facts: AccessFacts) -> bool:
    """Whether the rule lets the member in *by themselves* (purchase and manual never
    do: they need a grant; a level rule needs a level provider)."""
    if not facts.member:
        return False
    if kind is AccessKind.OPEN:
        return True
    if kind is AccessKind.TIER:
        return facts.tier >= value
    if kind is AccessKind.DAYS_AFTER_JOIN:
        return facts.member_days >= value
    if kind is AccessKind.LEVEL:
        return facts.level is not None and facts.level >= value
    return False


def keeps_access(kind: AccessKind, value: int, facts: AccessFacts) -> bool:
    """Whether an active enrolment keeps running: membership always matters; the
    tier rule is re-checked (a lost tier pauses); granted rules (purchase, manual,
    level) and days since joining (which only grow) hold while a member."""
    if not facts.member:
        return False
    if kind is AccessKind.TIER:
        return facts.tier >= value
    return True


# --------------------------------------------------------------------------- drip


class DripKind(enum.StrEnum):
    IMMEDIATE = "immediate"
    AFTER_DAYS = "after_days"
    AT_DATE = "at_date"
    AFTER_PREVIOUS = "after_previous"


class LessonState(enum.StrEnum):
    LOCKED = "locked"
    AVAILABLE = "available"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    PASSED = "passed"
    FAILED = "failed"


DONE = frozenset({LessonState.COMPLETED, LessonState.PASSED})


@dataclass(frozen=True)
class ModuleRule:
    id: int
    drip: DripKind
    drip_days: int = 0
    drip_at_ms: int | None = None


@dataclass(frozen=True)
class LessonRule:
    id: int
    module_id: int
    required: bool = True
    preview: bool = False


@dataclass(frozen=True)
class Outline:
    """A course's structure in order (modules, and lessons in module then position
    order)."""

    modules: Sequence[ModuleRule]
    lessons: Sequence[LessonRule]
    lessons_in_order: bool = False


def module_unlock_ms(module: ModuleRule, activated_ms: int) -> int | None:
    """When a timed module opens for an enrolment activated at ``activated_ms`` (None:
    not timed)."""
    if module.drip is DripKind.AFTER_DAYS:
        return activated_ms + module.drip_days * 86_400_000
    if module.drip is DripKind.AT_DATE:
        return module.drip_at_ms or 0
    return None


@dataclass
class Computed:
    states: dict[int, LessonState] = field(default_factory=dict)
    open_modules: set[int] = field(default_factory=set)
    progress_percent: int = 0
    complete: bool = False


def compute(outline: Outline, *, enrolment: EnrolmentState | None, activated_ms: int | None,
            released: bool, progress: Mapping[int, LessonState], now_ms: int,
            completion_percent: int = 100) -> Computed:
    """Every lesson's state for one learner, the modules open to them, their progress
    (required lessons done, in percent) and whether the course is complete.

    A lesson is ``locked`` unless the enrolment opens content (active or completed) or
    it is a preview; its module must be open (drip: immediate; N days after
    activation; at a date; after the previous module's required lessons are done;
    everything when staff released the course to the learner); with ``lessons in
    order`` every earlier required lesson must be done. An open lesson's state is its
    recorded progress (``available`` when none). A completed enrolment keeps what it
    reached."""
    out = Computed()
    by_module: dict[int, list[LessonRule]] = {}
    for lesson in outline.lessons:
        by_module.setdefault(lesson.module_id, []).append(lesson)
    content = opens_content(enrolment)
    previous_done = True
    for module in outline.modules:
        lessons = by_module.get(module.id, [])
        if not content:
            is_open = False
        elif released or module.drip is DripKind.IMMEDIATE:
            is_open = True
        elif module.drip is DripKind.AFTER_PREVIOUS:
            is_open = previous_done
        else:
            at = module_unlock_ms(module, activated_ms or now_ms)
            is_open = at is not None and at <= now_ms
        if is_open:
            out.open_modules.add(module.id)
        previous_done = all(progress.get(lesson.id) in DONE
                            for lesson in lessons if lesson.required)
    order_ok = True
    required = done = 0
    for lesson in outline.lessons:
        recorded = progress.get(lesson.id)
        reachable = lesson.module_id in out.open_modules and (
            order_ok or not outline.lessons_in_order)
        if reachable or lesson.preview:
            out.states[lesson.id] = recorded or LessonState.AVAILABLE
        else:
            out.states[lesson.id] = LessonState.LOCKED
        if lesson.required:
            required += 1
            if recorded in DONE:
                done += 1
            else:
                order_ok = False
    out.progress_percent = 100 if required == 0 else done * 100 // required
    out.complete = required > 0 and out.progress_percent >= completion_percent
    return out


# -------------------------------------------------------------------------- quizzes


class QuestionKind(enum.StrEnum):
    SINGLE = "single"
    MULTIPLE = "multiple"
    TRUE_FALSE = "true_false"
    SHORT = "short"


@dataclass(frozen=True)
class Question:
    id: int
    kind: QuestionKind
    choices: tuple[str, ...]
    correct: tuple[int | str, ...]
    """Indices into ``choices`` (choice kinds), accepted answers (short)."""
    points: int = 1


def normalise(text: str) -> str:
    """Short answers match after NFKC, case folding and collapsing whitespace and
    dropping trailing punctuation (``" Paris. "`` is ``"paris"``)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).rstrip(".!?;:, ")


def draw(questions: Sequence[Question], *, pool_size: int | None, shuffle_questions: bool,
         shuffle_answers: bool, rng: random.Random) -> tuple[list[int], list[list[int]]]:
    """The questions of a new attempt (a random ``pool_size`` of them when set, in
    random order when shuffled) and, per question, the order its choices are shown in
    (``order[i]`` is the original index of the i-th shown choice)."""
    chosen = list(questions)
    if pool_size is not None and pool_size < len(chosen):
        chosen = rng.sample(chosen, pool_size)
        if not shuffle_questions:
            chosen.sort(key=lambda q: questions.index(q))
    elif shuffle_questions:
        rng.shuffle(chosen)
    orders: list[list[int]] = []
    for q in chosen:
        order = list(range(len(q.choices)))
        if shuffle_answers and q.kind is not QuestionKind.TRUE_FALSE:
            rng.shuffle(order)
        orders.append(order)
    return [q.id for q in chosen], orders


def grade_one(question: Question, order: Sequence[int], answer: Sequence[int] | str | None,
              ) -> bool:
    """Whether one answer is right. Choice answers are indices *as shown*; they are
    mapped back through ``order``. A multiple-choice answer is right only when it is
    exactly the set of correct choices."""
    if answer is None:
        return False
    if question.kind is QuestionKind.SHORT:
        if not isinstance(answer, str):
            return False
        accepted = {normalise(str(a)) for a in question.correct}
        return normalise(answer) in accepted
    if isinstance(answer, str):
        return False
    try:
        picked = {order[i] for i in answer if 0 <= i < len(order)}
    except TypeError:
        return False
    if len(picked) != len(set(answer)):
        return False  # an index out of range
    correct = {int(c) for c in question.correct}
    if question.kind is not QuestionKind.MULTIPLE and len(picked) != 1:
        return False
    return picked == correct


def grade(questions: Sequence[Question], orders: Sequence[Sequence[int]],
          answers: Mapping[int, Sequence[int] | str]) -> tuple[int, int, dict[int, bool]]:
    """(score, max score, right per question id)."""
    score = total = 0
    right: dict[int, bool] = {}
    for question, order in zip(questions, orders, strict=True):
        total += question.points
        ok = grade_one(question, order, answers.get(question.id))
        right[question.id] = ok
        if ok:
            score += question.points
    return score, total, right


def passes(score: int, max_score: int, pass_percent: int) -> bool:
    return max_score > 0 and score * 100 >= pass_percent * max_score


def ids_of(items: Iterable[LessonRule]) -> list[int]:
    return [i.id for i in items]
