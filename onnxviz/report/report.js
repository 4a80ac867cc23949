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
  function make(tag, props, children) {  /* an element with properties (never innerHTML) */
    var el = document.createElement(tag);
    Object.keys(props).forEach(function (k) { el[k] = props[k]; });
    (children || []).forEach(function (child) { el.appendChild(child); });
    return el;
  }
  var title = make("h2", {id: "viewer-title"});
  var prev = make("button", {type: "button", textContent: "← channel"});
  var next = make("button", {type: "button", textContent: "channel →"});
  var close = make("button", {type: "button", id: "viewer-close", textContent: "Close (Esc)"});
  var big = make("img", {alt: ""});
  var range = make("p", {id: "viewer-range"});
  var stats = make("p", {className: "note"});
  var box = make("div", {className: "box"}, [make("div", {className: "bar"}, [title, prev, next, close]),
                                             range, stats]);
  var viewer = make("div", {id: "viewer", hidden: true}, [box]);
  viewer.setAttribute("role", "dialog");
  viewer.setAttribute("aria-modal", "true");
  viewer.setAttribute("aria-labelledby", "viewer-title");
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
