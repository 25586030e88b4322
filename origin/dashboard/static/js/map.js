// A world map shaded by clicks, drawn from the vendored world-atlas
// TopoJSON (Natural Earth 1:110m) in the Equal Earth projection. Country
// ids there are ISO 3166-1 numeric; the vendored code table maps them to
// the alpha-2 codes the stats use. Small states missing from 1:110m
// still show in the countries table beside the map.
import { h } from './dom.js';

let shapes = null; // Promise of [{a2, name, d}]

async function loadShapes() {
  const [topo, codes] = await Promise.all([
    fetch('/dashboard/vendor/countries-110m.json').then((r) => r.json()),
    fetch('/dashboard/vendor/iso3166-codes.json').then((r) => r.json()),
  ]);
  const byNum = new Map(codes.map((c) => [c[2], c[0]]));
  const [sx, sy] = topo.transform.scale, [tx, ty] = topo.transform.translate;
  const arcs = topo.arcs.map((arc) => {
    let x = 0, y = 0;
    return arc.map(([dx, dy]) => { x += dx; y += dy; return project(x * sx + tx, y * sy + ty); });
  });
  const ring = (idx) => {
    const pts = [];
    for (const i of idx) {
      const a = i < 0 ? arcs[~i].slice().reverse() : arcs[i];
      pts.push(...(pts.length ? a.slice(1) : a));
    }
    // A ring cut at the antimeridian jumps across the map: lift the pen
    // there instead of drawing a line through the world.
    return pts.map((p, i) => (i === 0 || Math.abs(p[0] - pts[i - 1][0]) > 300 ? 'M' : 'L') + p[0].toFixed(1) + ',' + p[1].toFixed(1)).join('') + 'Z';
  };
  const out = [];
  for (const g of topo.objects.countries.geometries) {
    if (g.id === '010' || !g.arcs) continue; // Antarctica
    const polys = g.type === 'Polygon' ? [g.arcs] : g.arcs;
    out.push({ a2: byNum.get(g.id) || '', name: (g.properties && g.properties.name) || '', d: polys.map((p) => p.map(ring).join('')).join('') });
  }
  return out;
}

// project is the Equal Earth projection (Šavrič, Patterson, Jenny 2018),
// scaled to a 820 × 400 view box.
function project(lon, lat) {
  const A1 = 1.340264, A2 = -0.081106, A3 = 0.000893, A4 = 0.003796, M = Math.sqrt(3) / 2;
  const l = lon * Math.PI / 180, p = lat * Math.PI / 180;
  const t = Math.asin(M * Math.sin(p)), t2 = t * t, t6 = t2 * t2 * t2;
  const x = l * Math.cos(t) / (M * (A1 + 3 * A2 * t2 + t6 * (7 * A3 + 9 * A4 * t2)));
  const y = t * (A1 + A2 * t2 + t6 * (A3 + A4 * t2));
  return [410 + x * 150, 200 - y * 150];
}

// worldMap returns an SVG of the world with each country's class set by
// its share of the most clicked one (q0 none … q5 most). counts is the
// stats' countries breakdown [{key, clicks}].
export async function worldMap(counts) {
  shapes = shapes || loadShapes();
  const list = await shapes;
  const by = new Map(counts.map((c) => [c.key, c.clicks]));
  const max = Math.max(0, ...counts.filter((c) => c.key !== 'ZZ').map((c) => c.clicks));
  const svg = h('svg:svg', { viewBox: '0 0 820 345', class: 'map', role: 'img', 'aria-label': 'World map of clicks by country' });
  for (const s of list) {
    const n = by.get(s.a2) || 0;
    const q = n === 0 || max === 0 ? 0 : Math.max(1, Math.ceil(5 * n / max));
    svg.appendChild(h('svg:path', { d: s.d, class: 'q' + q, 'data-country': s.a2 }, h('svg:title', {}, `${s.name}: ${n} clicks`)));
  }
  return svg;
}
