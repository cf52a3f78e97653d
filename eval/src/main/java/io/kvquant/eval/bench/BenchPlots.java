package io.kvquant.eval.bench;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.plot.CombinedDomainXYPlot;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/** The PNG of {@code kvq bench generate}: peak RSS and decode tokens/s against context, one line per kv row. */
final class BenchPlots {

    static {
        System.setProperty("java.awt.headless", "true");
    }

    private static final Color[] PALETTE = {
        new Color(0x000000), new Color(0x1f77b4), new Color(0x7f7f7f), new Color(0xd62728), new Color(0x2ca02c),
        new Color(0x9467bd), new Color(0xff7f0e), new Color(0x8c564b)};

    private BenchPlots() {
    }

    static void plot(Path png, List<Map<String, Object>> results) throws IOException {
        Map<String, XYSeries> rss = new LinkedHashMap<>();
        Map<String, XYSeries> tps = new LinkedHashMap<>();
        for (Map<String, Object> r : results) {
            if (!"ok".equals(r.get("status"))) {
                continue;
            }
            String name = r.get("kv") + " (" + r.get("mode") + ")";
            double ctx = ((Number) r.get("context")).doubleValue();
            rss.computeIfAbsent(name, k -> new XYSeries(k, true, true))
                    .add(ctx, GenerateBenchCommand.num(r.get("peak_rss_bytes")) / 1048576);
            double d = GenerateBenchCommand.num(r.get("decode_tokens_per_s"));
            if (!Double.isNaN(d)) {
                tps.computeIfAbsent(name, k -> new XYSeries(k, true, true)).add(ctx, d);
            }
        }
        NumberAxis x = new NumberAxis("prompt length (tokens)");
        x.setAutoRangeIncludesZero(true);
        CombinedDomainXYPlot plot = new CombinedDomainXYPlot(x);
        plot.setGap(12);
        List<String> names = List.copyOf(rss.keySet());
        plot.add(subplot("peak RSS (MiB)", rss, names, true), 1);
        plot.add(subplot("decode tokens/s", tps, names, false), 1);
        JFreeChart chart = new JFreeChart("kvq bench generate: memory and decode speed vs context",
                new Font("SansSerif", Font.BOLD, 15), plot, true);
        chart.setBackgroundPaint(Color.WHITE);
        ChartUtils.saveChartAsPNG(png.toFile(), chart, 900, 800);
    }

    private static final java.awt.Shape[] SHAPES = {
        new java.awt.geom.Rectangle2D.Double(-4, -4, 8, 8), new java.awt.geom.Ellipse2D.Double(-4, -4, 8, 8),
        new java.awt.Polygon(new int[] {0, 5, -5}, new int[] {-5, 4, 4}, 3),
        new java.awt.Polygon(new int[] {0, 5, 0, -5}, new int[] {-5, 0, 5, 0}, 4),
        new java.awt.Polygon(new int[] {0, 5, -5}, new int[] {5, -4, -4}, 3)};

    private static XYPlot subplot(String label, Map<String, XYSeries> series, List<String> names, boolean legend) {
        XYSeriesCollection data = new XYSeriesCollection();
        XYLineAndShapeRenderer r = new XYLineAndShapeRenderer(true, true);
        int i = 0;
        for (XYSeries s : series.values()) {
            data.addSeries(s);
            int k = Math.max(0, names.indexOf(s.getKey().toString()));
            r.setSeriesPaint(i, PALETTE[k % PALETTE.length]);
            r.setSeriesStroke(i, new BasicStroke(s.getKey().toString().startsWith("ort") ? 3f : 2f));
            r.setSeriesShape(i, SHAPES[k % SHAPES.length]);
            r.setSeriesVisibleInLegend(i, legend);
            i++;
        }
        NumberAxis y = new NumberAxis(label);
        y.setAutoRangeIncludesZero(true);
        XYPlot p = new XYPlot(data, null, y, r);
        p.setBackgroundPaint(Color.WHITE);
        p.setDomainGridlinePaint(new Color(0xdddddd));
        p.setRangeGridlinePaint(new Color(0xdddddd));
        return p;
    }
}
