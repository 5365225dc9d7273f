"""The reproducibility book's machinery, data flowing one way:
`paper` (the paper's numbers, typed once) -> `tables` (a table is one object; profiles) ->
`runner` (train every row and seed -> `result.Result`, the one results.json schema; `stats` for
seed spread and verdicts) -> `report` (pages from results) and `build` (`stm book`); `figure1`
is Figure 1's own pipeline. `stm_lib.reproduce` runs a table's notebook into runs/ with provenance."""
