module github.com/porthole-iot/porthole

go 1.26.0
