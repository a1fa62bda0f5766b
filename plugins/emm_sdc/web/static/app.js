// Science data search: filters (in the URL query, 1:1 with the API's), results table with client-side
// paging, file details, downloads, "copy as curl / Python", and the Mars context plot.

import { AuthError, apiGet, apiUrl, endSession, loadConfig, logIn, session } from "./api.js";
import { drawMap, mapOrder, recordAt } from "./plot.js";
import { exactFilters, parseQuery, toQuery } from "./query.js";

const $ = (id) => document.getElementById(id);

/** A DOM element: attributes (on* are listeners, true/false toggle boolean ones) and children. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) el.setAttribute(k, v);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return el;
}

const NAMES = { exi: "EXI", emu: "EMUS", emr: "EMIRS" };
const KERNELS = { p: "predicted", r: "reconstructed", f: "final", n: "none" };
const QL_TTL_MS = 50 * 60 * 1000;  // presigned URLs last an hour: ask again before that
const pad2 = (n) => String(n).padStart(2, "0");
const fixed = (d) => (v) => (v === null || v === undefined ? "—" : v.toFixed(d));
const COLUMNS = [
  { key: "file_name", label: "File name" },
  { key: "instrument_id", label: "Instrument", text: (r) => NAMES[r.instrument_id] || r.instrument_id },
  { key: "data_level", label: "Level" },
  { key: "timetag", label: "Date/time (UTC)", cls: "when", text: (r) => r.timetag.slice(0, 19) },
  { key: "spacecraft_lat", label: "SC lat (°)", num: fixed(1) },
  { key: "spacecraft_lon", label: "SC lon (°E)", num: fixed(1) },
  { key: "spacecraft_alt", label: "SC alt (km)",
    num: (v) => (v === null ? "—" : Math.round(v).toLocaleString("en-US")) },
  { key: "spacecraft_lst", label: "SC LST" },
  { key: "mars_ls", label: "Ls (°)", num: fixed(1) },
  { key: "absolute_version", label: "Version", num: () => "", text: (r) => `v${pad2(r.version)}-${pad2(r.revision)}` },
];

const state = {
  config: null, records: [], view: [], params: new Map(), query: null, seq: 0,
  sort: { key: null, dir: 1 }, page: 0, perPage: 20, selected: new Set(),
  detail: null, ql: new Map(), thumbCells: new Map(), mapFocus: null, codeTab: "curl",
};

// ---------------------------------------------------------------- messages and who is logged in

function showMessage(text, { login = false, kind = "error" } = {}) {
  const box = $("message");
  box.className = `message ${kind}`;
  box.replaceChildren(h("span", {}, text),
    login ? h("button", { type: "button", onclick: openLogin }, "Log in") : null);
  box.hidden = false;
}

const clearMessage = () => { $("message").hidden = true; };
const setStatus = (text) => { $("status").textContent = text; };

function renderWho() {
  const s = session();
  const team = s && s.groups.includes("emm-team");
  $("who-text").textContent = s
    ? `Logged in as ${s.username}${s.groups.length ? ` (${s.groups.join(", ")})` : ""}`
    : state.config.allow_anonymous ? "Guest: released files only" : "Not logged in";
  $("who-text").title = s && !team ? "You see released files (and your instrument's, for ITF members)" : "";
  $("login-open").hidden = Boolean(s);
  $("logout").hidden = !s;
}

function onAuthError(e) {
  renderWho();
  showMessage(e.message, { login: true });
  state.records = [];
  render();
}

function onError(e) {
  if (e instanceof AuthError) onAuthError(e);
  else showMessage(e.message || String(e));
}

// ---------------------------------------------------------------- login / logout

function openLogin() {
  $("login-error").textContent = "";
  $("login-form").reset();
  $("login").showModal();
  $("login-form").elements.username.focus();
}

async function submitLogin(ev) {
  ev.preventDefault();
  const form = $("login-form");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await logIn(form.elements.username.value.trim(), form.elements.password.value);
    state.ql.clear();  // quicklooks are seen per user
    $("login").close();
    clearMessage();
    renderWho();
    await search();
  } catch (e) {
    $("login-error").textContent = e.message;
    form.elements.password.select();
  } finally {
    button.disabled = false;
  }
}

function logOut() {
  endSession();
  renderWho();
  hideDetail();
  state.records = [];
  state.selected.clear();
  state.ql.clear();
  if (state.config.allow_anonymous) {
    showMessage("You are logged out; as a guest you see released files only.", { kind: "info" });
    search();
  } else {
    showMessage("You are logged out.", { login: true, kind: "info" });
    render();
  }
}

// ---------------------------------------------------------------- the filter form <-> the URL query

const form = () => $("filters");
const dayAfter = (iso, n) => new Date(Date.parse(`${iso}T00:00:00Z`) + n * 86400000).toISOString().slice(0, 10);

function checkboxGroup(fieldset, name, items) {
  for (const [value, label, note] of items) {
    fieldset.append(h("label", { class: "check" },
      h("input", { type: "checkbox", "data-param": name, value }), ` ${label}`,
      note ? h("span", { class: "note" }, ` ${note}`) : null));
  }
}

function buildForm() {
  const c = state.config;
  checkboxGroup($("f-instruments"), "instrument_id", c.instruments.map((i) => [i.id, i.name]));
  const has = (lv) => c.instruments.filter((i) => i.levels.includes(lv)).map((i) => i.name).join(", ");
  checkboxGroup($("f-levels"), "data_level", c.levels.map((lv) => (lv.endsWith("ql")
    ? [lv, `Quicklook ${lv}`, `(${has(lv)})`] : [lv, lv.toUpperCase(), `(${has(lv)})`])));
  checkboxGroup($("f-pred-rec"), "pred_rec", Object.entries(KERNELS).map(([k, v]) => [k, `${k} (${v})`]));
  $("modes").append(...c.modes.map((m) => h("option", { value: m })));
}

function fillForm(params) {
  const f = form();
  f.reset();
  for (const el of f.querySelectorAll("input[name]")) el.value = params.get(el.name) || "";
  for (const el of f.querySelectorAll("input[data-param]")) {
    el.checked = (params.get(el.dataset.param) || "").split(",").includes(el.value);
  }
  $("f-latest").checked = params.get("latest") !== "false";
  $("f-end-day").value = params.has("end_date") ? dayAfter(params.get("end_date"), -1) : "";
  const more = f.querySelector("details.more");
  if ([...more.querySelectorAll("input")].some((el) => el.value && (el.type !== "checkbox" || el.checked))) {
    more.open = true;
  }
}

function formParams() {
  const f = form();
  const p = new Map();
  for (const el of f.querySelectorAll("input[name]")) p.set(el.name, el.value.trim());
  for (const el of f.querySelectorAll("input[data-param]:checked")) {
    p.set(el.dataset.param, p.has(el.dataset.param) ? `${p.get(el.dataset.param)},${el.value}` : el.value);
  }
  if (!$("f-latest").checked) p.set("latest", "false");
  if ($("f-end-day").value) p.set("end_date", dayAfter($("f-end-day").value, 1));  // the API's end is exclusive
  return parseQuery(toQuery(p));
}

function showFilters(open) {
  $("filters-body").hidden = !open;
  $("filters-toggle").setAttribute("aria-expanded", String(open));
  $("filters-toggle").textContent = open ? "Hide" : "Show";
}

function validForm() {
  const f = form();
  const [lo, hi] = [f.elements.start_sc_lst, f.elements.end_sc_lst];
  const hours = (el) => Number(el.value.slice(0, 2));
  hi.setCustomValidity(Boolean(lo.value) !== Boolean(hi.value) ? "Give both local solar times, or neither."
    : [lo, hi].some((el) => el.value && hours(el) > 24) ? "Hours go from 00 to 24." : "");
  if (f.checkValidity()) return true;
  showFilters(true);
  f.reportValidity();
  return false;
}

function submitSearch(ev) {
  ev.preventDefault();
  if (!validForm()) return;
  const q = toQuery(formParams());
  const url = location.pathname + (q ? `?${q}` : "");
  if (url !== location.pathname + location.search + location.hash) history.pushState(null, "", url);
  hideDetail();
  if (matchMedia("(max-width: 800px)").matches) showFilters(false);  // narrow: make room for the results
  search();
}

// ---------------------------------------------------------------- search and results

async function search() {
  const seq = ++state.seq;
  state.params = parseQuery(location.search);
  state.query = toQuery(state.params);
  fillForm(state.params);
  if (!session() && !state.config.allow_anonymous) {
    state.records = [];
    render();
    showMessage("Log in to search the science data.", { login: true, kind: "info" });
    document.body.dataset.state = "ready";
    document.body.dataset.searches = String(seq);
    return;
  }
  document.body.dataset.state = "loading";
  $("results").setAttribute("aria-busy", "true");
  const t0 = performance.now();
  try {
    const records = await apiGet(`science-files-metadata${state.query ? `?${state.query}` : ""}`);
    if (seq !== state.seq) return;
    clearMessage();
    state.records = records;
    const names = new Set(records.map((r) => r.file_name));
    state.selected = new Set([...state.selected].filter((n) => names.has(n)));
    state.page = 0;
    setStatus("");
    render();
  } catch (e) {
    if (seq !== state.seq) return;
    state.records = [];
    render();
    onError(e);
  } finally {
    if (seq === state.seq) {
      $("results").removeAttribute("aria-busy");
      document.body.dataset.searchMs = (performance.now() - t0).toFixed(1);
      document.body.dataset.state = "ready";
      document.body.dataset.searches = String(seq);
    }
  }
}

function sortView() {
  const { key, dir } = state.sort;
  state.view = [...state.records];
  if (!key) return;
  const val = (r) => r[key];
  state.view.sort((a, b) => {
    const x = val(a), y = val(b);
    if (x === y) return 0;
    if (x === null || x === undefined || x === "") return 1;
    if (y === null || y === undefined || y === "") return -1;
    return (x < y ? -1 : 1) * dir;
  });
}

function render() {
  sortView();
  const pages = Math.max(1, Math.ceil(state.view.length / state.perPage));
  state.page = Math.min(state.page, pages - 1);
  renderHead();
  renderRows();
  renderPager();
  renderToolbar();
  renderMap();
  const s = session();
  const team = s && s.groups.includes("emm-team");
  const who = team ? "" : s ? " · released files (and your ITF's)" : " · released files only";
  $("count").textContent = `${state.records.length} file${state.records.length === 1 ? "" : "s"}${who}`;
  loadThumbs();
}

function renderHead() {
  const pageNames = pageRecords().map((r) => r.file_name);
  const all = h("input", {
    type: "checkbox", "aria-label": "Select all files on this page",
    onchange: (e) => {
      for (const n of pageNames) (e.target.checked ? state.selected.add(n) : state.selected.delete(n));
      renderRows(); renderToolbar(); renderMap();
    },
  });
  all.checked = pageNames.length > 0 && pageNames.every((n) => state.selected.has(n));
  const sortable = COLUMNS.map((c) => {
    const active = state.sort.key === c.key;
    return h("th", { scope: "col", "aria-sort": active ? (state.sort.dir > 0 ? "ascending" : "descending") : "none" },
      h("button", { type: "button", class: "sort", onclick: () => sortBy(c.key) }, c.label,
        h("span", { "aria-hidden": "true" }, active ? (state.sort.dir > 0 ? " ▲" : " ▼") : "")));
  });
  $("thead").replaceChildren(h("th", { scope: "col" }, all), h("th", { scope: "col" }, "Quicklook"), ...sortable);
}

function sortBy(key) {
  state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: 1 };
  state.page = 0;
  render();
  $("thead").querySelector(`th:nth-child(${COLUMNS.findIndex((c) => c.key === key) + 3}) button`).focus();
}

const pageRecords = () => state.view.slice(state.page * state.perPage, (state.page + 1) * state.perPage);

function renderRows() {
  state.thumbCells.clear();
  const rows = pageRecords().map((r) => {
    const picked = state.selected.has(r.file_name);
    const box = h("input", {
      type: "checkbox", "aria-label": `Select ${r.file_name}`,
      onchange: (e) => { toggle(r.file_name, e.target.checked); },
    });
    box.checked = picked;
    const thumb = h("td", { class: "thumb" });
    state.thumbCells.set(r.file_name, thumb);
    fillThumb(thumb, r.file_name);
    const cells = COLUMNS.slice(1).map((c) => h("td", { class: c.num ? "num" : c.cls },
      c.text ? c.text(r) : c.num ? c.num(r[c.key]) : (r[c.key] ?? "—")));
    return h("tr", { "data-file": r.file_name, class: picked ? "selected" : null },
      h("td", {}, box), thumb,
      h("td", { class: "name" }, h("button", { type: "button", class: "link", onclick: () => openDetail(r.file_name) },
        r.file_name)),
      ...cells);
  });
  if (!rows.length) {
    rows.push(h("tr", {}, h("td", { colspan: COLUMNS.length + 2, class: "empty" },
      state.query === null ? "" : "No files match these filters.")));
  }
  $("tbody").replaceChildren(...rows);
}

function toggle(name, on) {
  if (on) state.selected.add(name); else state.selected.delete(name);
  const row = $("tbody").querySelector(`tr[data-file="${CSS.escape(name)}"]`);
  if (row) {
    row.classList.toggle("selected", on);
    row.querySelector("input[type=checkbox]").checked = on;
  }
  const all = pageRecords().every((r) => state.selected.has(r.file_name));
  $("thead").querySelector("input[type=checkbox]").checked = all;
  renderToolbar();
  renderMap();
}

function renderPager() {
  const n = state.view.length;
  const first = state.page * state.perPage;
  const last = Math.min(n, first + state.perPage);
  $("range").textContent = n ? `${first + 1} – ${last} of ${n}` : "0 of 0";
  const pages = Math.max(1, Math.ceil(n / state.perPage));
  $("first").disabled = $("prev").disabled = state.page === 0;
  $("next").disabled = $("last").disabled = state.page >= pages - 1;
}

function goPage(p) {
  const pages = Math.max(1, Math.ceil(state.view.length / state.perPage));
  state.page = Math.max(0, Math.min(pages - 1, p));
  renderHead(); renderRows(); renderPager(); loadThumbs();
}

function renderToolbar() {
  const k = state.selected.size;
  $("dl-selected").textContent = `Download selected files${k ? ` (${k})` : ""}`;
  $("dl-selected").disabled = k === 0;
  $("dl-all").disabled = state.records.length === 0;
}

// ---------------------------------------------------------------- quicklook thumbnails

function fillThumb(td, name) {
  const q = state.ql.get(name);
  td.replaceChildren(q && q.url
    ? h("img", { src: q.url, alt: `Quicklook of ${name}`, width: 40, height: 40, loading: "lazy", decoding: "async" })
    : h("span", { class: "none", "aria-label": "no quicklook" }, "—"));
}

async function loadThumbs() {
  const now = Date.now();
  const names = pageRecords().map((r) => r.file_name)
    .filter((n) => !state.ql.has(n) || (state.ql.get(n).url && now - state.ql.get(n).t > QL_TTL_MS));
  if (!names.length) return;
  try {
    const urls = await apiGet(`quicklook-urls?file_names=${names.map(encodeURIComponent).join(",")}`);
    for (const n of names) state.ql.set(n, { url: urls[n] || null, t: now });
    for (const n of names) if (state.thumbCells.has(n)) fillThumb(state.thumbCells.get(n), n);
  } catch (e) {
    if (e instanceof AuthError) onAuthError(e);  // otherwise: thumbnails are a nicety, the table stands
  }
}

// ---------------------------------------------------------------- details of one file

const detailFromHash = () => {
  const m = /^#file=(.+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
};
const fileLink = (name) => h("a", { href: `#file=${encodeURIComponent(name)}` }, name);

function openDetail(name) {
  if (detailFromHash() === name) showDetail(name);
  else location.hash = `file=${encodeURIComponent(name)}`;  // a history entry; hashchange shows it
}

function closeDetail() {
  const name = state.detail;
  history.replaceState(null, "", location.pathname + location.search);
  hideDetail();
  const back = $("tbody").querySelector(`tr[data-file="${CSS.escape(name || "")}"] button.link`);
  (back || $("results-heading")).focus();
}

function hideDetail() {
  state.detail = null;
  $("detail").hidden = true;
  renderMap();
}

async function showDetail(name) {
  state.detail = name;
  $("detail").hidden = false;
  $("detail-heading").textContent = name;
  $("detail-body").replaceChildren(h("p", {}, "Loading…"));
  $("detail-heading").focus();
  renderMap();
  try {
    const d = await apiGet(`science-file-details?file_name=${encodeURIComponent(name)}`);
    if (state.detail === name) renderDetail(d);
  } catch (e) {
    if (state.detail !== name) return;
    if (e instanceof AuthError) { onAuthError(e); hideDetail(); return; }
    $("detail-body").replaceChildren(h("p", { class: "error" }, e.status === 404
      ? "This file does not exist or is not available to you." : e.message));
  }
}

function section(title, ...content) {
  return h("section", {}, h("h3", {}, title), ...content);
}

function fieldTable(obj, caption) {
  return h("table", { class: "fields" }, h("caption", { class: "visually-hidden" }, caption),
    h("tbody", {}, Object.entries(obj).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k),
      h("td", {}, v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v))))));
}

function linkList(names, none) {
  return names.length ? h("ul", { class: "links" }, names.map((n) => h("li", {}, fileLink(n)))) : h("p", {}, none);
}

function renderDetail(d) {
  const rec = d.record;
  const inResult = state.records.some((r) => r.file_name === rec.file_name);
  const pick = h("button", { type: "button", onclick: () => { toggle(rec.file_name, !state.selected.has(rec.file_name));
    pick.textContent = state.selected.has(rec.file_name) ? "Deselect" : "Select"; } },
  state.selected.has(rec.file_name) ? "Deselect" : "Select");
  const versions = h("ul", { class: "versions" }, d.versions.map((v) => h("li",
    { "aria-current": v.file_name === rec.file_name ? "true" : null },
    v.file_name === rec.file_name ? h("strong", {}, v.file_name) : fileLink(v.file_name),
    v.latest ? h("span", { class: "badge latest" }, "latest") : null,
    h("span", { class: `badge ${v.released ? "released" : "unreleased"}` }, v.released ? "released" : "not released"),
    h("span", { class: "badge" }, `kernels ${v.pred_rec}`))));
  const run = d.processing_run;
  $("detail-body").replaceChildren(
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", onclick: () => downloadFile(rec.file_name).catch(onError) },
        "Download"),
      inResult ? pick : null),
    d.quicklooks.length ? section("Quicklook", d.quicklooks.map((q) => h("figure", {},
      h("img", { src: q.url, alt: `Quicklook ${q.file_name}` }), h("figcaption", {}, fileLink(q.file_name))))) : null,
    section("Versions", versions),
    section("Made from", linkList(d.inputs, "Nothing indexed: delivered by the MOC.")),
    section("Used to make", linkList(d.outputs, "No product yet.")),
    section("Processing run", run ? fieldTable(run, "The processing run that made this file")
      : h("p", {}, "None: delivered by the MOC.")),
    section(`Metadata (${Object.keys(rec).length} fields)`, fieldTable(rec, "Every metadata field of this file")),
  );
}

// ---------------------------------------------------------------- downloads

/** Start a browser download of a presigned URL without leaving the page (a hidden frame navigates to it). */
function startDownload(url) {
  const frame = h("iframe", { src: url, title: "download", class: "download-frame", tabindex: "-1" });
  document.body.append(frame);
  setTimeout(() => frame.remove(), 10 * 60 * 1000);
}

async function downloadFile(name) {
  setStatus(`Downloading ${name}…`);
  startDownload(await apiGet(`science-files-download?file_name=${encodeURIComponent(name)}`, { text: true }));
  setStatus(`Started the download of ${name}.`);
}

async function downloadBundle(params, n) {
  setStatus(`Packing ${n} file${n === 1 ? "" : "s"} into one .tgz…`);
  const q = toQuery(params);
  startDownload(await apiGet(`science-files-download${q ? `?${q}` : ""}`, { text: true }));
  setStatus(`Started the download of ${n} file${n === 1 ? "" : "s"} as one .tgz.`);
}

async function downloadSelected() {
  const chosen = state.records.filter((r) => state.selected.has(r.file_name));
  if (chosen.length === 1) return downloadFile(chosen[0].file_name);
  const exact = exactFilters(chosen, state.records, state.params);
  if (exact) return downloadBundle(exact, chosen.length);
  // The API's bulk download selects by filters; no filter selects exactly these files: one by one.
  for (const [i, r] of chosen.entries()) {
    setStatus(`Downloading ${i + 1} of ${chosen.length} one by one (no API filter selects exactly these files)…`);
    startDownload(await apiGet(`science-files-download?file_name=${encodeURIComponent(r.file_name)}`, { text: true }));
    await new Promise((ok) => { setTimeout(ok, 300); });
  }
  setStatus(`Started ${chosen.length} downloads.`);
}

function busy(button, job) {
  return async () => {
    button.disabled = true;
    try { await job(); } catch (e) { setStatus(""); onError(e); } finally { renderToolbar(); }
  };
}

// ---------------------------------------------------------------- copy as curl / Python

function codeText(tab) {
  const q = state.query ? `?${state.query}` : "";
  const api = apiUrl("").replace(/\/$/, "");
  const login = state.config.login_endpoint;
  const auth = JSON.stringify({ AuthFlow: "USER_PASSWORD_AUTH", ClientId: state.config.client_id,
    AuthParameters: { USERNAME: "YOUR_USERNAME", PASSWORD: "YOUR_PASSWORD" } });
  const guest = !session() && state.config.allow_anonymous;
  if (tab === "curl") {
    const hdr = guest ? "" : ' -H "Authorization: $TOKEN"';
    const c = guest ? "# " : "";
    return [
      `API=${api}`,
      guest ? "# as a guest (released files only); to log in:"
        : "# log in (Cognito USER_PASSWORD_AUTH); the token lasts 60 minutes",
      `${c}TOKEN=$(curl -s -X POST '${login}/' -H 'X-Amz-Target: AWSCognitoIdentityProviderService.InitiateAuth' \\`,
      `${c}  -H 'Content-Type: application/x-amz-json-1.1' -d '${auth}' \\`,
      `${c}  | python3 -c 'import json,sys; print(json.load(sys.stdin)["AuthenticationResult"]["AccessToken"])')`,
      "# the records (a JSON array)",
      `curl -s${hdr} "$API/science-files-metadata${q}"`,
      "# every match as one .tgz (the answer is a presigned URL, fetched without the header)",
      `curl -s${hdr} "$API/science-files-download${q}" | xargs curl -s -o emm_files.tgz`,
    ].join("\n");
  }
  const headers = guest ? "" : ", headers=auth";
  return [
    "import json",
    "",
    "import requests",
    "",
    `API = "${api}"`,
    ...(guest ? ["# as a guest: released files only"] : [
      `LOGIN = "${login}"`,
      "token = requests.post(LOGIN + \"/\", headers={",
      '    "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",',
      '    "Content-Type": "application/x-amz-json-1.1",',
      `}, data=json.dumps(${auth})).json()["AuthenticationResult"]["AccessToken"]`,
      'auth = {"Authorization": token}  # raw, no "Bearer"',
    ]),
    `files = requests.get(API + "/science-files-metadata${q}"${headers}).json()  # 25-field records`,
    `url = requests.get(API + "/science-files-download${q}"${headers}).text  # every match as one .tgz`,
    'open("emm_files.tgz", "wb").write(requests.get(url).content)  # presigned: no header',
  ].join("\n");
}

function showCode(tab) {
  state.codeTab = tab;
  for (const t of ["curl", "python"]) $(`tab-${t}`).setAttribute("aria-selected", String(t === tab));
  $("code-text").textContent = codeText(tab);
  $("code-copied").textContent = "";
}

async function copyCode() {
  const text = $("code-text").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const range = document.createRange();  // no clipboard API off https/localhost: select for Ctrl+C
    range.selectNodeContents($("code-text"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    if (!document.execCommand("copy")) { $("code-copied").textContent = "Selected: press Ctrl+C to copy."; return; }
  }
  $("code-copied").textContent = "Copied.";
}

// ---------------------------------------------------------------- the map

function renderMap() {
  drawMap($("map"), state.records, state.selected, state.detail || state.mapFocus);
}

function pickFromMap(rec) {
  state.mapFocus = rec.file_name;
  toggle(rec.file_name, true);
  const i = state.view.findIndex((r) => r.file_name === rec.file_name);
  if (i >= 0) goPage(Math.floor(i / state.perPage));
  openDetail(rec.file_name);
}

function mapKeys(ev) {
  const order = mapOrder(state.records);
  if (!order.length) return;
  let i = order.findIndex((r) => r.file_name === state.mapFocus);
  if (ev.key === "ArrowRight" || ev.key === "ArrowDown") i = (i + 1) % order.length;
  else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") i = (i - 1 + order.length) % order.length;
  else if ((ev.key === "Enter" || ev.key === " ") && i >= 0) { ev.preventDefault(); pickFromMap(order[i]); return; }
  else return;
  ev.preventDefault();
  const r = order[Math.max(0, i)];
  state.mapFocus = r.file_name;
  const where = `lat ${r.spacecraft_lat.toFixed(1)}°, lon ${r.spacecraft_lon.toFixed(1)}°E`;
  $("map-focus").textContent = `${r.file_name}: ${where}`;
  renderMap();
}

// ---------------------------------------------------------------- wiring

function syncFromLocation() {
  if (toQuery(parseQuery(location.search)) !== state.query) search();
  const name = detailFromHash();
  if (name && name !== state.detail) showDetail(name);
  else if (!name && state.detail) hideDetail();
}

async function main() {
  state.config = await loadConfig();
  buildForm();
  renderWho();
  const on = (id, ev, fn) => $(id).addEventListener(ev, fn);
  on("filters", "submit", submitSearch);
  on("clear", "click", () => { fillForm(new Map()); form().elements.start_date.focus(); });
  on("filters-toggle", "click", () => showFilters($("filters-body").hidden));
  on("login-open", "click", openLogin);
  on("login-form", "submit", submitLogin);
  on("login-cancel", "click", () => $("login").close());
  on("logout", "click", logOut);
  on("per-page", "change", (e) => { state.perPage = Number(e.target.value); state.page = 0; render(); });
  on("first", "click", () => goPage(0));
  on("prev", "click", () => goPage(state.page - 1));
  on("next", "click", () => goPage(state.page + 1));
  on("last", "click", () => goPage(Infinity));
  on("dl-selected", "click", busy($("dl-selected"), downloadSelected));
  on("dl-all", "click", busy($("dl-all"), () => downloadBundle(state.params, state.records.length)));
  on("code-open", "click", () => { showCode(state.codeTab); $("code").showModal(); });
  on("tab-curl", "click", () => showCode("curl"));
  on("tab-python", "click", () => showCode("python"));
  on("code-copy", "click", copyCode);
  on("code-close", "click", () => $("code").close());
  on("detail-close", "click", closeDetail);
  on("detail", "keydown", (e) => { if (e.key === "Escape") closeDetail(); });
  on("map", "click", (e) => {
    const rec = recordAt($("map"), state.records, e.offsetX, e.offsetY);
    if (rec) pickFromMap(rec);
  });
  on("map", "keydown", mapKeys);
  window.addEventListener("popstate", syncFromLocation);
  window.addEventListener("hashchange", syncFromLocation);
  let resize = 0;
  window.addEventListener("resize", () => { cancelAnimationFrame(resize); resize = requestAnimationFrame(renderMap); });
  await search();
  const name = detailFromHash();
  if (name) showDetail(name);
  performance.mark("emm:first-results");
}

main().catch((e) => showMessage(`The page could not start: ${e.message}`));
