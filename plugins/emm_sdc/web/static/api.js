// The page's calls: its own config and login proxy (relative to the page), and the science-files API
// with the Cognito access token sent raw in Authorization, as the published clients send it.

const SESSION_KEY = "emm.session";

export class AuthError extends Error {
  constructor(expired) {
    super(expired ? "Your session has expired, log in again." : "Log in to search the science data.");
    this.expired = expired;
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let config = null;

export async function loadConfig() {
  const r = await fetch("config.json", { cache: "no-cache" });
  config = await r.json();
  return config;
}

/** The logged-in session ({token, expires_at, username, groups}) kept for this tab, or null. */
export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

export function endSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

function claims(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(b64));
  } catch {
    return {};
  }
}

/** Log in through the page's proxy to Cognito; the session is kept in sessionStorage (this tab only). */
export async function logIn(username, password) {
  const r = await fetch("login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, body.message || `Login failed (HTTP ${r.status}).`);
  const c = claims(body.access_token);
  const s = {
    token: body.access_token, expires_at: Date.now() + 1000 * (body.expires_in || 3600),
    username: c.username || username, groups: c["cognito:groups"] || [],
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  return s;
}

/** Absolute URL of an API path (for "copy as curl / Python"). */
export const apiUrl = (path) => new URL(`${config.api}/${path}`, location.href).href;

/** GET an API path; JSON (or text) back. 401 -> AuthError (expired when a token was sent). */
export async function apiGet(path, { text = false } = {}) {
  const s = session();
  if (s && s.expires_at <= Date.now()) {
    endSession();
    throw new AuthError(true);
  }
  const headers = s ? { Authorization: s.token } : {};
  const r = await fetch(`${config.api}/${path}`, { headers });
  if (r.status === 401) {
    if (s) endSession();
    throw new AuthError(Boolean(s));
  }
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new ApiError(r.status, body.message || `The API answered HTTP ${r.status}.`);
  }
  return text ? r.text() : r.json();
}
