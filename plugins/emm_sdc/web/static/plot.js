// The Mars context plot: sub-spacecraft points (east longitude 0–360 vs latitude −90..90) on a canvas.

const COLORS = { exi: "#1f77b4", emu: "#9467bd", emr: "#2ca02c" };
const PAD = { left: 34, right: 14, top: 8, bottom: 22 };

function frame(canvas) {
  const w = canvas.clientWidth || canvas.width;
  const pw = w - PAD.left - PAD.right, ph = Math.round(pw / 2);
  return { w, h: ph + PAD.top + PAD.bottom, pw, ph };
}

function xy(f, rec) {
  return [PAD.left + (rec.spacecraft_lon / 360) * f.pw, PAD.top + ((90 - rec.spacecraft_lat) / 180) * f.ph];
}

const located = (rec) => rec.spacecraft_lat !== null && rec.spacecraft_lon !== null;

/** Draw `records`; `selected` (a Set of file names) are ringed, `focus` (a file name) is marked. */
export function drawMap(canvas, records, selected, focus) {
  const f = frame(canvas);
  const dpr = window.devicePixelRatio || 1;
  canvas.style.height = `${f.h}px`;
  canvas.width = Math.round(f.w * dpr);
  canvas.height = Math.round(f.h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, f.w, f.h);
  g.fillStyle = "#c1440e22";
  g.fillRect(PAD.left, PAD.top, f.pw, f.ph);
  g.strokeStyle = "#0000001f";
  g.fillStyle = "#444";
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  for (let lon = 0; lon <= 360; lon += 30) {
    const x = PAD.left + (lon / 360) * f.pw;
    g.beginPath(); g.moveTo(x, PAD.top); g.lineTo(x, PAD.top + f.ph); g.stroke();
    if (lon % 60 === 0) { g.textAlign = "center"; g.fillText(`${lon}°`, x, f.h - 6); }
  }
  for (let lat = -90; lat <= 90; lat += 30) {
    const y = PAD.top + ((90 - lat) / 180) * f.ph;
    g.beginPath(); g.moveTo(PAD.left, y); g.lineTo(PAD.left + f.pw, y); g.stroke();
    g.textAlign = "right"; g.fillText(`${lat}°`, PAD.left - 4, y + 4);
  }
  for (const rec of records) {
    if (!located(rec)) continue;
    const [x, y] = xy(f, rec);
    g.fillStyle = COLORS[rec.instrument_id] || "#333";
    g.beginPath(); g.arc(x, y, 3.5, 0, 2 * Math.PI); g.fill();
  }
  g.lineWidth = 2;
  for (const rec of records) {
    if (!located(rec) || !(selected.has(rec.file_name) || rec.file_name === focus)) continue;
    const [x, y] = xy(f, rec);
    g.strokeStyle = rec.file_name === focus ? "#d00" : "#000";
    g.beginPath(); g.arc(x, y, rec.file_name === focus ? 8 : 6, 0, 2 * Math.PI); g.stroke();
  }
}

/** The record drawn nearest to a click at (x, y) CSS pixels of the canvas, within 8 px; or null. */
export function recordAt(canvas, records, x, y) {
  const f = frame(canvas);
  let best = null, bestD = 64;
  for (const rec of records) {
    if (!located(rec)) continue;
    const [px, py] = xy(f, rec);
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d <= bestD) { best = rec; bestD = d; }
  }
  return best;
}

/** The records the map can show, in the order arrow keys move through them (west to east). */
export function mapOrder(records) {
  return records.filter(located).sort((a, b) => a.spacecraft_lon - b.spacecraft_lon
    || b.spacecraft_lat - a.spacecraft_lat);
}
