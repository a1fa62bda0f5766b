// Search parameters: the page's URL query IS the API query (the API's own parameter names), so a
// bookmarked page and the API call it makes map 1:1.

export const FILTERS = [
  "instrument_id", "data_level", "mode", "pred_rec", "orbit_num", "latest",
  "start_date", "end_date", "start_sc_lst", "end_sc_lst",
  ...["mars_ls", "sc_lat", "sc_lon", "sc_alt", "subsolar_lat", "subsolar_lon"]
    .flatMap((n) => [`start_${n}`, `end_${n}`]),
];

// API range name -> record field.
export const RANGE_FIELDS = {
  mars_ls: "mars_ls", sc_lat: "spacecraft_lat", sc_lon: "spacecraft_lon", sc_alt: "spacecraft_alt",
  subsolar_lat: "subsolar_lat", subsolar_lon: "subsolar_lon",
};
const LIST_FIELDS = { instrument_id: "instrument_id", data_level: "data_level", mode: "mode",
  pred_rec: "pred_rec", orbit_num: "orbit_number" };

/** The known, non-empty filters of a query string, as a Map in canonical order. */
export function parseQuery(search) {
  const given = new URLSearchParams(search);
  const out = new Map();
  for (const name of FILTERS) {
    const v = (given.get(name) || "").trim();
    if (v !== "" && !(name === "latest" && v === "true")) out.set(name, v);  // latest=true is the default
  }
  return out;
}

/** A query string (no "?") with raw "," and ":" as the published clients send them; "" for no filter. */
export function toQuery(params) {
  return [...params].map(([k, v]) => `${k}=${encodeURIComponent(v).replace(/%2C/gi, ",").replace(/%3A/gi, ":")}`)
    .join("&");
}

const day = (iso) => Date.parse(`${iso}T00:00:00Z`);
const lstHours = (s) => { const [h, m, x] = s.split(":").map(Number); return h + m / 60 + x / 3600; };
export const timeOf = (rec) => Date.parse(rec.timetag.replace(" ", "T"));

/** Whether a record passes the filters, as the API's SQL decides it (visibility and latest aside). */
export function matches(rec, params) {
  for (const [name, field] of Object.entries(LIST_FIELDS)) {
    if (params.has(name) && !params.get(name).split(",").includes(String(rec[field] ?? ""))) return false;
  }
  const t = timeOf(rec);
  if (params.has("start_date") && !(t >= day(params.get("start_date")))) return false;
  if (params.has("end_date") && !(t < day(params.get("end_date")))) return false;
  if (params.has("start_sc_lst")) {
    const lo = lstHours(params.get("start_sc_lst")), hi = lstHours(params.get("end_sc_lst"));
    const x = lstHours(rec.spacecraft_lst || "99:00:00");
    if (lo <= hi ? !(x >= lo && x <= hi) : !(x >= lo || x <= hi)) return false;
  }
  for (const [name, field] of Object.entries(RANGE_FIELDS)) {
    const v = rec[field];
    if (params.has(`start_${name}`) && !(v !== null && v >= Number(params.get(`start_${name}`)))) return false;
    if (params.has(`end_${name}`) && !(v !== null && v <= Number(params.get(`end_${name}`)))) return false;
  }
  return true;
}

/**
 * Filters selecting exactly `chosen` among `all` (the result of `params`), or null when no API filter can.
 * The API's bulk download takes filters, not names: the chosen files' bounding box (their values of every
 * list filter, their day range, their geometry ranges) is added to the search, and used only if, applied
 * to the current result, it keeps exactly the chosen files.
 */
export function exactFilters(chosen, all, params) {
  // Only the added constraints are checked here: every record of `all` already passed `params` on the server.
  const added = new Map();
  for (const [name, field] of Object.entries(LIST_FIELDS)) {
    const values = [...new Set(chosen.map((r) => r[field]))];
    if (values.every((v) => v !== "" && v !== null)) added.set(name, values.sort().join(","));
  }
  const times = chosen.map(timeOf);
  const iso = (ms) => new Date(ms).toISOString().slice(0, 10);
  added.set("start_date", iso(Math.min(...times)));
  added.set("end_date", iso(day(iso(Math.max(...times))) + 86400000));
  for (const [name, field] of Object.entries(RANGE_FIELDS)) {
    const values = chosen.map((r) => r[field]);
    if (values.some((v) => v === null || v === undefined)) continue;
    added.set(`start_${name}`, String(Math.min(...values)));
    added.set(`end_${name}`, String(Math.max(...values)));
  }
  const names = new Set(chosen.map((r) => r.file_name));
  const kept = all.filter((r) => matches(r, added));
  if (kept.length !== names.size || !kept.every((r) => names.has(r.file_name))) return null;
  return parseQuery(toQuery(new Map([...params, ...added])));
}
