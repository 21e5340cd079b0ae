// The Q&A panel of the stage page: questions of the session shown, ordered by votes then
// age, live from qa_update; asking, voting and (hosts, co-hosts, moderators) marking
// answered or dismissed. Split from voice.js; it gets the page's state and helpers.

import { request } from "./gateway.js";
import { questionItem, replaceKeepingFocus } from "./stage_view.js";

const $ = (id) => document.getElementById(id);

/** The Q&A functions bound to the page: `state.questions` / `state.voted` hold what is
 * shown; `currentSession()` is the session of the selected stage (or undefined). */
export function createQa({ state, showError, userName, canModerate, currentSession }) {
  async function loadQuestions(session) {
    try {
      const r = await request("qa_fetch", { session_id: session.id });
      if (currentSession()?.id !== session.id) return;
      state.questions = new Map(r.questions.map((q) => [q.id, q]));
      state.voted = new Set(r.voted_ids ?? []);
      renderQuestions();
    } catch (err) { showError(err); }
  }

  function onQuestion(q) {
    const session = currentSession();
    if (!session || q.session_id !== session.id) return;
    if (q.state === "dismissed" && !canModerate(session)) state.questions.delete(q.id);
    else state.questions.set(q.id, q);
    renderQuestions();
  }

  function renderQuestions() {
    const session = currentSession();
    const mod = canModerate(session);
    const qs = [...state.questions.values()].sort((a, b) =>
      b.votes - a.votes || a.created_at - b.created_at || a.id - b.id);
    replaceKeepingFocus($("qa-list"), qs.map((q) => questionItem(q, { voted: state.voted.has(q.id), mod,
      author: q.author_id ? userName(q.author_id) : "deleted account" })));
    $("qa-empty").hidden = qs.length > 0;
  }

  async function ask(text) {
    const session = currentSession();
    if (!session) return false;
    try {
      const r = await request("qa_ask", { session_id: session.id, text }, { retry: false });
      onQuestion(r.question);
      return true;
    } catch (err) { showError(err); return false; }
  }

  async function vote(questionId) {
    const vote = !state.voted.has(questionId);
    try {
      const r = await request("qa_vote", { question_id: questionId, vote });
      if (r.voted) state.voted.add(questionId); else state.voted.delete(questionId);
      onQuestion(r.question);
    } catch (err) { showError(err); }
  }

  async function setQuestionState(questionId, qstate) {
    try {
      const r = await request("qa_set_state", { question_id: questionId, state: qstate });
      onQuestion(r.question);
    } catch (err) { showError(err); }
  }

  return { loadQuestions, onQuestion, renderQuestions, ask, vote, setQuestionState };
}
