// The stats page's only behaviour: the day chart switches between cost and
// tokens. Everything else is rendered in the page; this reads nothing else.
(function () {
  "use strict";
  var chart = document.getElementById("day-chart");
  var buttons = document.querySelectorAll(".chart-tools button[data-metric]");
  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      var m = b.getAttribute("data-metric");
      if (chart) chart.setAttribute("data-metric", m);
      buttons.forEach(function (o) { o.classList.toggle("on", o === b); });
    });
  });
  document.body.setAttribute("data-rendered", "true");
})();
