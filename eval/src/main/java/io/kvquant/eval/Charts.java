package io.kvquant.eval;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.LogAxis;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/** PNG charts with JFreeChart, rendered headless. */
public final class Charts {

    static {
        System.setProperty("java.awt.headless", "true");
    }

    private Charts() {
    }

    /** One line of a chart: a name, points, and whether it is a dashed reference (a bound). */
    public record Line(String name, double[] x, double[] y, boolean dashed) {
    }

    private static final Color[] PALETTE = {
        new Color(0x1f77b4), new Color(0xd62728), new Color(0x2ca02c), new Color(0x9467bd),
        new Color(0xff7f0e), new Color(0x8c564b), new Color(0x17becf), new Color(0x7f7f7f)};

    /** A line chart with a log-scale y axis. */
    public static void logLines(Path png, String title, String xLabel, String yLabel, List<Line> lines) throws IOException {
        XYSeriesCollection data = new XYSeriesCollection();
        for (Line l : lines) {
            XYSeries s = new XYSeries(l.name(), false, true);
            for (int i = 0; i < l.x().length; i++) {
                if (l.y()[i] > 0) {
                    s.add(l.x()[i], l.y()[i]);
                }
            }
            data.addSeries(s);
        }
        NumberAxis xAxis = new NumberAxis(xLabel);
        xAxis.setStandardTickUnits(NumberAxis.createIntegerTickUnits());
        LogAxis yAxis = new LogAxis(yLabel);
        yAxis.setBase(10);
        yAxis.setSmallestValue(1e-8);
        yAxis.setTickUnit(new org.jfree.chart.axis.NumberTickUnit(1.0));
        yAxis.setMinorTickCount(9);
        yAxis.setMinorTickMarksVisible(true);
        yAxis.setNumberFormatOverride(new java.text.DecimalFormat("0E0"));
        XYLineAndShapeRenderer r = new XYLineAndShapeRenderer(true, true);
        int solid = 0;
        int dashed = 0;
        for (int i = 0; i < lines.size(); i++) {
            if (lines.get(i).dashed()) {
                r.setSeriesPaint(i, dashed++ % 2 == 0 ? Color.DARK_GRAY : Color.GRAY);
                r.setSeriesStroke(i, new BasicStroke(1.5f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 10f,
                        new float[]{6f, 4f}, 0f));
                r.setSeriesShapesVisible(i, false);
            } else {
                r.setSeriesPaint(i, PALETTE[solid++ % PALETTE.length]);
                r.setSeriesStroke(i, new BasicStroke(2.2f));
            }
        }
        XYPlot plot = new XYPlot(data, xAxis, yAxis, r);
        plot.setBackgroundPaint(Color.WHITE);
        plot.setDomainGridlinePaint(new Color(0xdddddd));
        plot.setRangeGridlinePaint(new Color(0xdddddd));
        JFreeChart chart = new JFreeChart(title, new Font("SansSerif", Font.BOLD, 16), plot, true);
        chart.setBackgroundPaint(Color.WHITE);
        ChartUtils.saveChartAsPNG(png.toFile(), chart, 900, 600);
    }

    /**
     * Grouped horizontal bars, one group per category (e.g. a KV setting), one bar per series;
     * values labelled at the bar ends.
     */
    public static void bars(Path png, String title, String seriesA, List<String> categories, List<Double> a,
                            String seriesB, List<Double> b) throws IOException {
        org.jfree.data.category.DefaultCategoryDataset data = new org.jfree.data.category.DefaultCategoryDataset();
        for (int i = 0; i < categories.size(); i++) {
            data.addValue(a.get(i), seriesA, categories.get(i));
            if (b != null) {
                data.addValue(b.get(i), seriesB, categories.get(i));
            }
        }
        JFreeChart chart = org.jfree.chart.ChartFactory.createBarChart(title, null, null, data,
                org.jfree.chart.plot.PlotOrientation.HORIZONTAL, true, false, false);
        org.jfree.chart.plot.CategoryPlot plot = chart.getCategoryPlot();
        plot.setBackgroundPaint(Color.WHITE);
        plot.setRangeGridlinePaint(new Color(0xdddddd));
        org.jfree.chart.renderer.category.BarRenderer r = (org.jfree.chart.renderer.category.BarRenderer) plot.getRenderer();
        r.setBarPainter(new org.jfree.chart.renderer.category.StandardBarPainter());
        r.setShadowVisible(false);
        r.setSeriesPaint(0, PALETTE[0]);
        r.setSeriesPaint(1, PALETTE[4]);
        r.setDefaultItemLabelGenerator(new org.jfree.chart.labels.StandardCategoryItemLabelGenerator("{2}",
                new java.text.DecimalFormat("0.000")));
        r.setDefaultItemLabelsVisible(true);
        chart.setBackgroundPaint(Color.WHITE);
        chart.getTitle().setFont(new Font("SansSerif", Font.BOLD, 16));
        ChartUtils.saveChartAsPNG(png.toFile(), chart, 900, Math.max(300, 120 + 60 * categories.size()));
    }

    /**
     * A heat map of accuracies in [0, 1]: columns (e.g. haystack lengths) by rows (e.g. needle
     * depths), red for 0 through yellow to green for 1, each cell labelled with its value.
     */
    public static void heatMap(Path png, String title, String xLabel, List<String> columns, String yLabel,
                               List<String> rows, double[][] values) throws IOException {
        org.jfree.data.xy.DefaultXYZDataset data = new org.jfree.data.xy.DefaultXYZDataset();
        int n = columns.size() * rows.size();
        double[][] xyz = new double[3][n];
        int k = 0;
        for (int c = 0; c < columns.size(); c++) {
            for (int r = 0; r < rows.size(); r++) {
                xyz[0][k] = c;
                xyz[1][k] = r;
                xyz[2][k] = values[r][c];
                k++;
            }
        }
        data.addSeries("accuracy", xyz);
        org.jfree.chart.renderer.xy.XYBlockRenderer renderer = new org.jfree.chart.renderer.xy.XYBlockRenderer();
        org.jfree.chart.renderer.LookupPaintScale scale = new org.jfree.chart.renderer.LookupPaintScale(0, 1.0001, Color.GRAY);
        for (int i = 0; i <= 20; i++) {
            double v = i / 20.0;
            scale.add(v, accuracyColor(v));
        }
        renderer.setPaintScale(scale);
        renderer.setDefaultItemLabelGenerator((dataset, series, item) -> String.format(java.util.Locale.ROOT, "%.0f",
                100 * ((org.jfree.data.xy.XYZDataset) dataset).getZValue(series, item)));
        renderer.setDefaultItemLabelsVisible(true);
        renderer.setDefaultItemLabelFont(new Font("SansSerif", Font.PLAIN, 11));
        org.jfree.chart.axis.SymbolAxis xAxis = new org.jfree.chart.axis.SymbolAxis(xLabel, columns.toArray(String[]::new));
        xAxis.setGridBandsVisible(false);
        org.jfree.chart.axis.SymbolAxis yAxis = new org.jfree.chart.axis.SymbolAxis(yLabel, rows.toArray(String[]::new));
        yAxis.setGridBandsVisible(false);
        yAxis.setInverted(true);
        XYPlot plot = new XYPlot(data, xAxis, yAxis, renderer);
        plot.setBackgroundPaint(Color.WHITE);
        plot.setDomainGridlinesVisible(false);
        plot.setRangeGridlinesVisible(false);
        JFreeChart chart = new JFreeChart(title, new Font("SansSerif", Font.BOLD, 15), plot, false);
        org.jfree.chart.title.PaintScaleLegend legend = new org.jfree.chart.title.PaintScaleLegend(scale,
                new NumberAxis("accuracy"));
        legend.setPosition(org.jfree.chart.ui.RectangleEdge.RIGHT);
        legend.setMargin(new org.jfree.chart.ui.RectangleInsets(10, 10, 10, 10));
        legend.setStripWidth(14);
        chart.addSubtitle(legend);
        chart.setBackgroundPaint(Color.WHITE);
        ChartUtils.saveChartAsPNG(png.toFile(), chart, 160 + 70 * columns.size(), 140 + 36 * rows.size());
    }

    private static Color accuracyColor(double v) {
        // red (0) -> yellow (0.5) -> green (1)
        float h = (float) (v * 120.0 / 360.0);
        return Color.getHSBColor(h, 0.65f, 0.92f);
    }
}
