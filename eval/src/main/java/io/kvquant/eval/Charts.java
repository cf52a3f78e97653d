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
}
