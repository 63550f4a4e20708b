"""The book's coursework: a student edition, an instructor edition and an offline grader, built from the
chapter notebooks' tagged exercise cells (see ``coursework/README.md``)."""
