/* onnxviz report: layer navigation (list, buttons, ←/→), the theme toggle, and the channel
   viewer (click or Enter on a map). Reads the page only through textContent and data-*
   attributes, writes only textContent and attributes: no HTML is ever built from data. */
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");

  /* ---- theme: prefers-color-scheme unless the toggle chose one (kept in localStorage) */
  var themeButton = document.getElementById("theme");
  function isDark() {
    var chosen = root.getAttribute("data-theme");
    if (chosen) { return chosen === "dark"; }
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  }
  function setTheme(theme) {
    if (theme === "dark" || theme === "light") { root.setAttribute("data-theme", theme); }
    if (themeButton) { themeButton.textContent = isDark() ? "Light theme" : "Dark theme"; }
  }
  try { setTheme(window.localStorage.getItem("onnxviz-theme")); } catch (e) { setTheme(null); }
  if (themeButton) {
    themeButton.addEventListener("click", function () {
      var theme = isDark() ? "light" : "dark";
      setTheme(theme);
      try { window.localStorage.setItem("onnxviz-theme", theme); } catch (e) { /* file: may refuse */ }
    });
  }

  /* ---- layers: one shown at a time */
  var layers = Array.prototype.slice.call(document.querySelectorAll("section.layer"));
  var links = Array.prototype.slice.call(document.querySelectorAll("nav a[data-layer]"));
  var current = -1;
  function show(k, scroll) {
    if (!layers.length) { return; }
    k = Math.max(0, Math.min(layers.length - 1, k));
    layers.forEach(function (s, i) { s.classList.toggle("current", i === k); });
    links.forEach(function (a) { a.setAttribute("aria-current", String(Number(a.getAttribute("data-layer")) === k)); });
    current = k;
    if (scroll) { layers[k].scrollIntoView({block: "start"}); }
  }
  function fromHash() {
    var m = /^#layer-(\d+)$/.exec(window.location.hash);
    return m ? Number(m[1]) : null;
  }
  function go(k) {
    show(k, true);
    if (window.history && window.history.replaceState) { window.history.replaceState(null, "", "#layer-" + current); }
  }
  var first = fromHash();
  show(first === null ? 0 : first, first !== null);
  window.addEventListener("hashchange", function () {
    var k = fromHash();
    if (k !== null) { show(k, true); }
  });
  links.forEach(function (a) {
    a.addEventListener("click", function (event) {
      event.preventDefault();
      go(Number(a.getAttribute("data-layer")));
    });
  });
  document.querySelectorAll("button[data-step]").forEach(function (b) {
    b.addEventListener("click", function () { go(current + Number(b.getAttribute("data-step"))); });
  });

  /* ---- the channel viewer, built here so that a page without JavaScript has no empty dialog */
  var viewer = document.createElement("div");
  viewer.id = "viewer";
  viewer.hidden = true;
  viewer.setAttribute("role", "dialog");
  viewer.setAttribute("aria-modal", "true");
  viewer.setAttribute("aria-labelledby", "viewer-title");
  var box = document.createElement("div");
  box.className = "box";
  var bar = document.createElement("div");
  bar.className = "bar";
  var title = document.createElement("h2");
  title.id = "viewer-title";
  var prev = document.createElement("button");
  prev.type = "button";
  prev.textContent = "← channel";
  var next = document.createElement("button");
  next.type = "button";
  next.textContent = "channel →";
  var close = document.createElement("button");
  close.type = "button";
  close.id = "viewer-close";
  close.textContent = "Close (Esc)";
  var big = document.createElement("img");
  big.alt = "";
  var range = document.createElement("p");
  range.id = "viewer-range";
  var stats = document.createElement("p");
  stats.className = "note";
  bar.appendChild(title);
  bar.appendChild(prev);
  bar.appendChild(next);
  bar.appendChild(close);
  box.appendChild(bar);
  box.appendChild(range);
  box.appendChild(stats);
  viewer.appendChild(box);
  document.body.appendChild(viewer);
  var openTile = null;
  var opener = null;

  function text(el, selector) {
    var found = el && el.querySelector(selector);
    return found ? found.textContent : "";
  }
  function openViewer(tile) {
    var img = tile.querySelector("img");
    if (!img) { return; }
    var section = tile.closest("section");
    var group = tile.closest("[data-image-name]");
    if (!big.parentNode) { box.insertBefore(big, range); }  /* no empty <img> before the first use */
    big.src = img.src;
    big.className = img.className;
    big.alt = img.alt;
    title.textContent = [text(section, "h2"), group ? group.getAttribute("data-image-name") : "",
                         "channel " + tile.getAttribute("data-channel")].filter(Boolean).join(" · ");
    range.textContent = "values " + tile.getAttribute("data-lo") + " to " + tile.getAttribute("data-hi") +
                        " (its colour scale: dark = " + tile.getAttribute("data-lo") + ", yellow = " +
                        tile.getAttribute("data-hi") + ")";
    stats.textContent = "mean " + tile.getAttribute("data-mean") + " · " + tile.getAttribute("data-active") +
                        " of positions > 0 · " + tile.getAttribute("data-size");
    if (!openTile) { opener = document.activeElement; }
    openTile = tile;
    viewer.hidden = false;
    close.focus();
  }
  function closeViewer() {
    viewer.hidden = true;
    openTile = null;
    if (opener && opener.focus) { opener.focus(); }
  }
  function step(delta) {
    if (!openTile) { return; }
    var tiles = Array.prototype.slice.call(openTile.parentNode.querySelectorAll(".tile"));
    var k = tiles.indexOf(openTile) + delta;
    if (k >= 0 && k < tiles.length) { openViewer(tiles[k]); }
  }
  prev.addEventListener("click", function () { step(-1); });
  next.addEventListener("click", function () { step(1); });
  close.addEventListener("click", closeViewer);
  viewer.addEventListener("click", function (event) { if (event.target === viewer) { closeViewer(); } });
  document.addEventListener("click", function (event) {
    var tile = event.target.closest ? event.target.closest(".tile") : null;
    if (tile && !viewer.contains(tile)) { openViewer(tile); }
  });

  /* ---- keys: ←/→ between layers (between channels while the viewer is open), Esc, Enter */
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) { return; }
    if (openTile) {
      if (event.key === "Escape") { closeViewer(); event.preventDefault(); }
      else if (event.key === "ArrowLeft") { step(-1); event.preventDefault(); }
      else if (event.key === "ArrowRight") { step(1); event.preventDefault(); }
      return;
    }
    if ((event.key === "Enter" || event.key === " ") && target && target.classList &&
        target.classList.contains("tile")) {
      openViewer(target);
      event.preventDefault();
    } else if (event.key === "ArrowLeft" && layers.length) {
      go(current - 1);
      event.preventDefault();
    } else if (event.key === "ArrowRight" && layers.length) {
      go(current + 1);
      event.preventDefault();
    }
  });
}());
