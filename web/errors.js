// Friendly errors for every page: the protocol and REST error codes
// (protocol/codes.py, docs/rest.md "Errors") in words a member understands. Pages show
// `friendlyError(err)`, never a raw `code: message`; the code stays available as
// `errorCode(err)` for tests and logs (pages put it in a data-error-code attribute).
// Unknown codes fall back to a general sentence, so a new server code never leaks raw.

const WORDS = {
  // the request
  invalid_request: "Something in that form isn't right. Please check it and try again.",
  invalid_argument: "Something in that form isn't right. Please check it and try again.",
  invalid_frame: "The app sent something the server didn't understand. Reload the page.",
  content_too_long: "That message is too long. Please shorten it.",
  empty_message: "You can't send an empty message.",
  too_many_attachments: "That's too many attachments for one message.",
  too_many_mentions: "That message mentions too many people.",
  invalid_emoji: "That emoji can't be used here.",
  not_ready: "Still connecting — try again in a moment.",
  already_identified: "Still connecting — try again in a moment.",
  // who is asking
  unauthorized: "Please sign in again.",
  invalid_credentials: "That username and password don't match. Please try again.",
  invalid_token: "Your session has ended. Please sign in again.",
  csrf_failed: "For your safety this request was blocked. Reload the page and sign in again.",
  forbidden: "You don't have permission to do that.",
  banned: "You are banned from this community.",
  timed_out: "You are timed out in this community for now.",
  channel_locked: "This channel is locked: only moderators can post right now.",
  lockdown: "This community is paused for new members right now. Please try again later.",
  automod_blocked: "This message was blocked by the community's rules.",
  origin_not_allowed: "This page isn't allowed to connect to this server.",
  not_found: "We couldn't find that — it may have been deleted, or you can't see it.",
  method_not_allowed: "That action isn't available.",
  // the state of the target
  conflict: "Someone changed this at the same time. Reload and try again.",
  already_exists: "That already exists.",
  username_taken: "That username is taken. Please pick another one.",
  limit_exceeded: "You've reached the limit for this.",
  too_many_reactions: "This message can't take more different reactions.",
  thread_archived: "This thread is archived, so it's read-only.",
  payload_too_large: "That's too large to send.",
  unsupported_media_type: "The app sent something the server didn't understand. Reload the page.",
  // slow down
  rate_limited: "You're going a bit fast. Please wait a moment and try again.",
  slowmode: "This channel is in slow mode. Please wait a moment before posting again.",
  too_many_attempts: "Too many sign-in attempts. Please wait a few minutes and try again.",
  // the server and the network
  internal: "Something went wrong on our side. Please try again.",
  unavailable: "The server is busy for a moment. Please try again shortly.",
  voice_capacity: "This room is full right now. Try again later or pick another room.",
  voice_unavailable: "Voice isn't available on this server right now.",
  network_error: "Can't reach the server. Check your connection and try again.",
  disconnected: "The connection dropped. Reconnecting…",
  logged_out: "You are signed out.",
};

const FALLBACK = "Something went wrong. Please try again.";

/** The machine code of an error (a HearthError / SessionError), or "". */
export function errorCode(err) {
  return typeof err?.code === "string" ? err.code : "";
}

/** What to tell a person about `err` (an error object or a plain string). */
export function friendlyError(err) {
  if (typeof err === "string") return err;
  const code = errorCode(err);
  if (code && WORDS[code]) return WORDS[code];
  if (code.startsWith("http_")) return FALLBACK;
  // A page's own Error("...") (no code) is already worded for people.
  return !code && typeof err?.message === "string" && err.message ? err.message : FALLBACK;
}

/** Put the words in `node` and the code in its data-error-code attribute. */
export function showErrorIn(node, err) {
  node.textContent = friendlyError(err);
  node.dataset.errorCode = errorCode(err);
}

/** The page-wide feedback of docs/web-style.md: `showError(err)` fills the red
 * #error-banner (#error-text) for 10 s, `showNotice(text)` the green #notice for 5 s. */
export function banners(doc = document) {
  const timers = { error: null, notice: null };
  const $ = (id) => doc.getElementById(id);
  $("error-close")?.addEventListener("click", () => { $("error-banner").hidden = true; });
  return {
    showError(err) {
      showErrorIn($("error-text"), err);
      $("error-banner").hidden = false;
      clearTimeout(timers.error);
      timers.error = setTimeout(() => { $("error-banner").hidden = true; }, 10000);
    },
    showNotice(text) {
      $("notice").textContent = text;
      $("notice").hidden = false;
      clearTimeout(timers.notice);
      timers.notice = setTimeout(() => { $("notice").hidden = true; }, 5000);
    },
    /** Run one change from a form: its buttons disabled meanwhile, the outcome told
     * (`done` as a notice, a failure as an error). */
    async act(form, fn, done) {
      const buttons = form ? [...form.querySelectorAll("button")] : [];
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await fn();
        if (done) this.showNotice(done);
      } catch (err) {
        this.showError(err);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    },
  };
}
