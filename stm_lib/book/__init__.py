"""The reproducibility book's machinery: the paper's figures typed once (`paper`), the shared
notebook helpers and profiles (`experiments`), Figure 1 (`figure1`) and `stm book` (`build`).
`stm_lib.reproduce` runs a table's notebook (book/tableN.ipynb) into runs/ with provenance."""
