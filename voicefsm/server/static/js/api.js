// The app's JSON API (same origin).

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(`${path} answered ${status}${detail ? `: ${detail}` : ""}`);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

async function request(path, options = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
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
