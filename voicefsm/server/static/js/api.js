// The app's JSON API (same origin).

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(`${path} answered ${status}${detail ? `: ${detail}` : ""}`);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

/** The CSRF token of a logged-in page (cookie voicefsm_csrf), echoed on requests that change state. */
export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)voicefsm_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : null;
}

function withCsrf(headers) {
  const token = csrfToken();
  return token ? { ...headers, "X-CSRF-Token": token } : headers;
}

async function request(path, options = {}) {
  const headers = withCsrf(options.headers || { Accept: "application/json" });
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && path !== "/api/phone/ticket") {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash)}`);
  }
  if (!response.ok) {
    let detail = "";
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
    } catch {
      detail = response.statusText;
    }
    throw new ApiError(response.status, detail, path);
  }
  if (response.status === 202 || response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : null;
}

/** The flow being served: states, transitions, slots. */
export const getFlow = () => request("/api/flow");

/** Recent calls, newest first. */
export const listCalls = (limit = 50) => request(`/api/calls?limit=${encodeURIComponent(limit)}`);

/** One call's record: transcript, path, slots, errors, recording_url. */
export const getCall = (callSid) => request(`/api/calls/${encodeURIComponent(callSid)}`);

/** Say something as the caller without speaking: {text} or {digits}. */
export const sendCallerInput = (callSid, input) =>
  request(`/api/calls/${encodeURIComponent(callSid)}/caller`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(input),
  });

/** A single-use ticket for the browser phone's media stream (null from a server without tickets). */
export async function getStreamTicket(callSid) {
  try {
    const body = await request("/api/phone/ticket", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ call_sid: callSid }),
    });
    return body && body.token ? body.token : null;
  } catch {
    return null;
  }
}

/** End the session and go to the login page. */
export async function logout() {
  await fetch("/logout", { method: "POST", headers: withCsrf({}) });
  location.assign("/login");
}

// A logged-in page offers to log out (the pages of an open dev server have no session).
if (typeof document !== "undefined" && csrfToken() !== null) {
  addEventListener("DOMContentLoaded", () => {
    const nav = document.querySelector("header.top nav");
    if (!nav) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn";
    button.id = "logout";
    button.textContent = "Log out";
    button.addEventListener("click", () => logout());
    nav.append(button);
  });
}
