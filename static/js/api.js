// The JSON API (docs/api.md); the cookie set at login authenticates every call.
export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(method, path, body) {
  const opts = {method, headers: {"Accept": "application/json"}, credentials: "same-origin"};
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "server unreachable");
  }
  if (resp.status === 204) return null;
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.error) || `HTTP ${resp.status}`);
  return data;
}

export const api = {
  status: () => call("GET", "/api/status"),
  layers: () => call("GET", "/api/layers"),
  scripts: () => call("GET", "/api/scripts"),
  functions: (regex, limit = 12) => call("GET", `/api/functions?limit=${limit}&regex=${encodeURIComponent(regex)}`),
  sessions: () => call("GET", "/api/sessions"),
  session: (id) => call("GET", `/api/sessions/${id}`),
  start: (cfg) => call("POST", "/api/sessions", cfg),
  stop: (id) => call("POST", `/api/sessions/${id}/stop`),
  journeys: (id, after, limit = 5000) => call("GET", `/api/sessions/${id}/journeys?after=${after}&limit=${limit}`),
};
