"""The run report as one self-contained HTML page: DAG, tables and static SVG plots."""
