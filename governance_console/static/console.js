// The console's behaviour: passkey enrollment and sign-in, and signing a decision in the
// browser. The command is built here, shown exactly as it will be signed, and its passkey
// assertion is over SHA-256 of its RFC 8785 JSON (without auth): the console only relays.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const say = (id, text) => { const el = $(id); if (el) el.textContent = text; };

function b64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function post(path, body, withCsrf) {
  const headers = { "Content-Type": "application/json" };
  if (withCsrf) headers["X-CSRF-Token"] = csrf();
  const response = await fetch(path, {
    method: "POST", headers, body: JSON.stringify(body || {}), credentials: "same-origin",
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

// RFC 8785 for what a command holds (strings, integers, booleans, null, arrays, objects):
// keys sorted by UTF-16 code units, which is how JavaScript sorts strings.
function canonical(value) {
  if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
  if (value !== null && typeof value === "object") {
    return "{" + Object.keys(value).sort().map(
      (k) => JSON.stringify(k) + ":" + canonical(value[k])).join(",") + "}";
  }
  return JSON.stringify(value);
}

async function enroll() {
  const token = location.pathname.split("/").pop();
  say("status", "Creating your passkey…");
  try {
    const { handle, options } = await post(`/enroll/${token}/options`);
    const credential = await navigator.credentials.create({
      publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
    });
    await post(`/enroll/${token}/finish`, { handle, credential: credential.toJSON() });
    say("status", "Passkey enrolled. You can now sign in.");
    const link = document.createElement("a");
    link.href = "/signin"; link.id = "to-signin"; link.textContent = "Sign in";
    $("status").after(link);
  } catch (error) {
    say("status", "Enrollment failed: " + error.message);
  }
}

async function signin() {
  say("status", "Waiting for your passkey…");
  try {
    const { handle, options } = await post("/signin/options");
    const credential = await navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
    });
    await post("/signin/finish", { handle, credential: credential.toJSON() });
    location.assign("/");
  } catch (error) {
    say("status", "Sign-in failed: " + error.message);
  }
}

let pending = null;

function build(decision) {
  const form = $("decide");
  const command = {
    command_id: crypto.randomUUID(),
    type: decision === "approve" ? "approve_requirement" : "reject_requirement",
    request_id: form.dataset.requestId,
    expected_revision: Number(form.dataset.revision),
    actor: { id: form.dataset.actor },
    args: { approval_id: form.dataset.approvalId },
    issued_at: new Date().toISOString(),
    audience: form.dataset.audience,
  };
  const reason = $("reason").value.trim();
  if (reason) command.reason = reason;
  pending = command;
  say("to-sign", JSON.stringify(command, null, 2));
  $("review").hidden = false;
  $("sign").focus();
}

async function signAndSend() {
  const command = pending;
  if (!command) return;
  const form = $("decide");
  say("outcome", "Waiting for your passkey…");
  try {
    const digest = await crypto.subtle.digest(
      "SHA-256", new TextEncoder().encode(canonical(command)));
    const assertion = await navigator.credentials.get({ publicKey: {
      challenge: digest,
      userVerification: "required",
      allowCredentials: [{ type: "public-key", id: fromB64url(form.dataset.keyId) }],
    } });
    const signed = Object.assign({}, command, { auth: {
      scheme: "webauthn",
      key_id: b64url(assertion.rawId),
      authenticator_data: b64url(assertion.response.authenticatorData),
      client_data_json: b64url(assertion.response.clientDataJSON),
      signature: b64url(assertion.response.signature),
    } });
    // The outcome stream is open before the command leaves: its outcome cannot pass unseen.
    await watch(form.dataset.requestId, command.command_id);
    say("outcome", "Sent; waiting for the outcome…");
    await post("/relay", signed, true);
  } catch (error) {
    say("outcome", "Not sent: " + error.message);
  }
}

function fromB64url(text) {
  const plain = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(plain, (c) => c.charCodeAt(0));
}

let source = null;

function watch(requestId, commandId) {
  if (source) source.close();
  source = new EventSource(`/requests/${encodeURIComponent(requestId)}/events`);
  const opened = new Promise((resolve, reject) => {
    source.onopen = resolve;
    source.onerror = () => reject(new Error("the outcome stream did not open"));
  });
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.command_id !== commandId) return;
    source.close();
    if (event.event_type === "transition.applied") {
      say("outcome", `applied: the request is ${event.to_status} at revision ${event.revision}`);
      say("status-value", event.to_status);
      say("revision", String(event.revision));
      $("review").hidden = true;
      $("decide").hidden = true;
    } else if (event.code === "concurrency_conflict") {
      // Reloaded at once, the notice carried over: the page must show the request as it now is.
      sessionStorage.setItem("notice", "concurrency_conflict: the request changed; review it again");
      location.reload();
    } else {
      say("outcome", `${event.code}: ${event.message}`);
    }
  };
  return opened;
}

// The inbox redraws itself from the server whenever an outcome is published.
function followInbox() {
  const live = $("inbox-live");
  if (!live) return;
  const stream = new EventSource("/events");
  let drawing = false;
  let again = false;
  const redraw = async () => {
    // One redraw at a time; an outcome during one asks for another after it.
    if (drawing) { again = true; return; }
    drawing = true;
    try {
      do {
        again = false;
        const response = await fetch("/", { credentials: "same-origin" });
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("inbox-live");
        if (fresh) live.replaceChildren(...fresh.childNodes);
      } while (again);
    } finally {
      drawing = false;
    }
  };
  // Once the stream is open nothing passes unseen; what happened before it, a redraw shows.
  stream.onopen = () => { live.dataset.live = "open"; redraw(); };
  stream.onmessage = redraw;
}

async function signout() {
  try { await post("/signout", {}, true); } finally { location.assign("/signin"); }
}

document.addEventListener("DOMContentLoaded", () => {
  const on = (id, handler) => { const el = $(id); if (el) el.addEventListener("click", handler); };
  followInbox();
  on("enroll", enroll);
  on("signin", signin);
  on("signout", signout);
  on("approve", () => build("approve"));
  on("reject", () => build("reject"));
  on("sign", signAndSend);
  on("cancel", () => { pending = null; $("review").hidden = true; $("approve").focus(); });
  const notice = sessionStorage.getItem("notice");
  if (notice) {
    sessionStorage.removeItem("notice");
    say("outcome", notice);
  }
});
